"""Surprise's gradient trick on torch: forward hooks capture the chosen blocks' outputs, and the
objective's gradient is added by a tensor hook (one layer, detached) or an explicit extra pass.

The algorithm, its options and its logs are the surprise plugin's (``clbench.strategies.surprise``) (read its docstring for
the three modes); this module is the torch half of ``Backend.surprise``, the one piece of surprise that
must differ per array library.
"""

from __future__ import annotations

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from clbench.train.surprise import aux_grad, aux_loss, signal_ratio, surprise_objective
from clbench.train.types import LossOutput


def prepare(s, model) -> None:
    """Nothing to change in a torch model: hooks are registered per loss."""


def before_step(s) -> None:
    pass


def after_update(s) -> None:
    pass


def loss(s, model, batch):
    """The base strategy's loss with the surprise objective's gradient (``s``: the surprise plugin)."""
    hidden: dict[int, torch.Tensor] = {}
    handles = [block.register_forward_hook(_capture(s, i, hidden)) for i, block in enumerate(s.blocks)]
    try:
        if s.options.target == "full":
            # fused attention kernels (flash / memory-efficient, CPU and CUDA) have no double
            # backward; the math kernel is plain differentiable ops
            with sdpa_kernel([SDPBackend.MATH]):
                out = s.inner_loss(model, batch)
        else:
            out = s.inner_loss(model, batch)
    finally:
        for h in handles:
            h.remove()
    if not out.loss.requires_grad or out.loss.grad_fn is None:
        return out  # nothing is updated at this step
    chosen = [i for i in range(len(s.blocks)) if i in hidden and hidden[i].requires_grad]
    if not chosen:
        return out
    k = s.train.grad_accum  # the trainer backpropagates out.loss / grad_accum
    if s.options.target == "detached" and len(chosen) == 1:
        i = chosen[0]  # the deepest layer with a term: its incoming gradient is exactly ∇_y L / k
        hidden[i].register_hook(_add_aux_grad(s, i, hidden[i].detach(), k))
        return out
    ys = [hidden[i] for i in chosen]
    total, terms, signals = surprise_objective(out.loss, ys, [s.weights[i] for i in chosen], s.options.target)
    for i, y, signal, term in zip(chosen, ys, signals, terms):
        _log(s, i, float(term.detach()) / k, signal_ratio(y, signal))
    # the value of the main loss (what the trainer logs), the gradient of the whole objective
    return LossOutput(out.loss.detach() + (total - total.detach()), out.logs)


def _capture(s, i: int, hidden: dict):
    full = s.options.target == "full"

    def hook(module, args, output):
        if not torch.is_grad_enabled():
            return  # e.g. a teacher's forward pass inside the base strategy's loss
        if i in hidden:
            raise RuntimeError(f"surprise: block {s.layer_index[i]} ran twice with gradients in one loss of "
                               f"strategy {s.strategy.name!r}; its output y is ambiguous")
        y = output[0] if isinstance(output, tuple) else output
        if full and not y.requires_grad:
            y.requires_grad_()  # nothing below trains now, but ∇_y L still depends on what follows
        hidden[i] = y

    return hook


def _add_aux_grad(s, i: int, y: torch.Tensor, k: int):
    weight = s.weights[i]

    def hook(grad):
        signal = grad * k  # ∇_y L
        _log(s, i, float(aux_loss(y, signal, weight)) / k, signal_ratio(y, signal))
        return grad + aux_grad(y, signal, weight) / k

    return hook


def _log(s, i: int, value: float, ratio: float | None = None) -> None:
    layer = s.layer_index[i]
    s.step_aux[layer] = s.step_aux.get(layer, 0.0) + value
    if ratio is not None:  # rms(∇_y L)/rms(y), the largest over the step's micro-batches
        s.step_ratio[layer] = max(ratio, s.step_ratio.get(layer, 0.0))
