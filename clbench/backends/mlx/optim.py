"""Optimizers for the MLX backend: one ``mlx.optimizers`` optimizer per parameter tensor.

Why one per tensor: an MLX optimizer keeps a single step counter for its whole tree and advances it on
every call, so applying one optimizer to a tier's subset would advance the bias correction of the
tensors that did *not* update, and its state is initialised from the first tree it sees. Torch's AdamW
instead keeps a step count per parameter and skips parameters without a gradient. One library optimizer
per tensor gives exactly torch's semantics with the library's own update rule: a tensor's moments and
step count advance only on the steps it is updated, whatever the tiers, warm-up or chunking around it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import mlx.core as mx
import mlx.optimizers as optim
from mlx import nn
from mlx.utils import tree_flatten, tree_unflatten


class PerTensor:
    """An optimizer per named tensor; :meth:`apply` updates only the tensors it is given gradients for."""

    def __init__(self, names: Iterable[str], make: Callable[[], optim.Optimizer]):
        self.optimizers: dict[str, optim.Optimizer] = {n: make() for n in names}

    def apply(self, model: nn.Module, grads: Mapping[str, mx.array], lr: float,
              lr_scale: Mapping[str, float] | None = None) -> int:
        """One step for each tensor in ``grads`` (a flat ``{name: gradient}``); returns the number of
        parameter elements updated. ``lr_scale`` multiplies the learning rate per tensor."""
        if not grads:
            return 0
        params = dict(tree_flatten(model.parameters()))
        new = {}
        for name, g in grads.items():
            opt = self.optimizers.get(name)
            if opt is None:
                raise KeyError(f"no optimizer for {name!r}: it was not trainable when the optimizer was built")
            opt.learning_rate = lr * (lr_scale[name] if lr_scale is not None else 1.0)
            new[name] = opt.apply_gradients({"p": g}, {"p": params[name]})["p"]
        model.update(tree_unflatten(list(new.items())))
        return sum(int(params[n].size) for n in grads)

    def steps(self) -> dict[str, int]:
        """How many updates each tensor has received (its bias-correction step)."""
        return {n: int(o.state["step"]) for n, o in self.optimizers.items()}

    def arrays(self) -> list:
        """Every state tree (for ``mx.eval`` after an update)."""
        return [o.state for o in self.optimizers.values()]

    def state_tensors(self) -> dict[str, mx.array]:
        """Flat state for a checkpoint, ``"<tensor>/<state key>"`` (e.g. ``.../p.m``, ``.../step``)."""
        return {f"{name}/{k}": v for name, o in self.optimizers.items() for k, v in tree_flatten(o.state)}

    def load_state_tensors(self, tensors: Mapping[str, mx.array]) -> None:
        by_name: dict[str, list] = {}
        for key, v in tensors.items():
            name, _, k = key.rpartition("/")
            by_name.setdefault(name, []).append((k, v))
        unknown = sorted(set(by_name) - set(self.optimizers))
        if unknown:
            raise KeyError(f"optimizer state for tensors that are not trainable: {unknown[:5]}")
        for name, items in by_name.items():
            self.optimizers[name].state = tree_unflatten(items)


def adamw(names: Iterable[str], weight_decay: float = 0.0, betas=(0.9, 0.999), eps: float = 1e-8) -> PerTensor:
    """torch.optim.AdamW's rule per tensor (``bias_correction=True``: torch corrects, MLX's default does not)."""
    return PerTensor(names, lambda: optim.AdamW(learning_rate=0.0, betas=list(betas), eps=eps,
                                                weight_decay=weight_decay, bias_correction=True))
