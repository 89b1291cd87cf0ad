"""The MLX backend: ``clbench.backends.base.Backend`` for mlx-lm models.

What differs from torch, and why:

* gradients come from ``nn.value_and_grad`` as a *nested* tree; :meth:`MLXBackend.forward_backward`
  flattens it with ``mlx.utils.tree_flatten`` before any strategy sees it, so strategies get
  ``{"model.layers.0.self_attn.q_proj.lora_a": g, ...}`` exactly as on torch (seed 002's critical bug
  was filtering the nested tree by flat names and matching nothing);
* a parameter outside a step's ``keep`` set is frozen for the step, so ``nn.value_and_grad`` neither
  computes nor returns its gradient;
* there is no ``.grad``: the gradients of a step are values, and :meth:`apply_gradients` hands exactly
  them to one library optimizer per tensor (``.optim.PerTensor``: a tensor's Adam moments and step count
  advance only when it is updated — torch's AdamW semantics for a parameter without a gradient);
* the learning-rate schedule *is* the torch schedule (transformers' schedulers driven on a placeholder
  optimizer): no second implementation of warm-up and decay to drift apart;
* the adapter is written with ``mx.save_safetensors``; the optimizer state goes into
  ``strategy_state.pt`` as torch tensors converted from MLX, so the layout and its readers stay
  backend-neutral.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
from mlx import nn
from mlx.utils import tree_flatten

from clbench.backends.base import Backend
from clbench.backends.mlx.optim import adamw
from clbench.data.encoding import IGNORE
from clbench.data.probe_kinds import MLX_KINDS
from clbench.errors import ConfigError
from clbench.results.files import atomic_path

MLX_PROBE_KINDS = MLX_KINDS  # the probe-kind table says which kinds the MLX view scores natively


def causal_lm_loss(model: nn.Module, batch: dict) -> mx.array:
    """Mean next-token cross-entropy over labelled tokens (labels ``-100`` ignored), as transformers'
    causal-LM loss. Right padding needs no mask: causal attention never looks at later positions."""
    batch = to_mx(batch)
    logits = model(batch["input_ids"])[:, :-1].astype(mx.float32)
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    ce = nn.losses.cross_entropy(logits, mx.where(keep, targets, 0), reduction="none")
    return (ce * keep).sum() / mx.maximum(keep.sum(), 1)


def to_mx(batch: dict) -> dict[str, mx.array]:
    """A collated torch batch as int32 MLX arrays (``input_ids``, ``labels``; the mask is implicit)."""
    if isinstance(batch.get("input_ids"), mx.array):
        return batch
    return {k: mx.array(batch[k].numpy().astype("int32")) for k in ("input_ids", "labels")}


class MLXSchedule:
    """The torch trainer's schedule (transformers' schedulers) on a placeholder optimizer."""

    def __init__(self, cfg):
        import torch

        from clbench.backends.torch_backend import TorchSchedule

        placeholder = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
        self.torch_schedule = TorchSchedule(placeholder, cfg)
        self.placeholder = placeholder

    def lr(self) -> float:
        return self.torch_schedule.lr()

    def advance(self) -> None:
        self.placeholder.step()  # no gradient: changes nothing, keeps torch's call-order check quiet
        self.torch_schedule.advance()


def to_torch(arrays: dict[str, mx.array]) -> dict:
    """MLX arrays as torch tensors for ``torch.save`` (floats as float32, integers as int64)."""
    import torch

    out = {}
    for k, a in arrays.items():
        a = a.astype(mx.float32) if mx.issubdtype(a.dtype, mx.floating) else a.astype(mx.int64)
        out[k] = torch.from_numpy(np.array(a))
    return out


def optimizer_state_from_torch(tensors: dict, params: dict[str, mx.array]) -> dict[str, mx.array]:
    """Inverse of :func:`to_torch` for :meth:`PerTensor.state_tensors`: the step counter back to uint64,
    the learning rate to float32, moments to their parameter's dtype."""
    out = {}
    for k, t in tensors.items():
        name, _, part = k.rpartition("/")
        arr = mx.array(t.numpy())
        dtype = {"step": mx.uint64, "learning_rate": mx.float32}.get(part, params[name].dtype)
        out[k] = arr.astype(dtype)
    return out


@contextmanager
def frozen_except(model: nn.Module, trainable: Collection[str], keep: Collection[str] | None) -> Iterator[None]:
    """Freeze the ``trainable`` parameters not in ``keep`` for the duration (``None``: freeze nothing), so
    ``nn.value_and_grad`` neither computes nor returns their gradients; restored afterwards."""
    if keep is None:
        yield
        return
    unknown = sorted(set(keep) - set(trainable))
    if unknown:
        raise KeyError(f"grad_names returned parameters that are not trainable: {unknown[:5]}")
    modules = dict(model.named_modules())
    off = [n.rsplit(".", 1) for n in trainable if n not in keep]
    for path, key in off:
        modules[path].freeze(keys=[key], recurse=False)
    try:
        yield
    finally:
        for path, key in off:
            modules[path].unfreeze(keys=[key], recurse=False)


class MLXBackend(Backend):
    name = "mlx"
    checkpoint_meta: ClassVar[dict] = {"backend": "mlx"}

    @property
    def surprise(self):
        """Surprise's gradient trick for MLX models (a custom VJP)."""
        from clbench.backends.mlx import surprise

        return surprise

    # --- the run ----------------------------------------------------------------------------------
    def check_stream(self, stream):
        """The probe kinds the MLX view can answer: lm-eval suites run through a ``TemplateLM`` that
        drives a torch model, so they need the torch backend."""
        for task in stream.tasks:
            for suite in task.probes:
                if suite.kind not in MLX_PROBE_KINDS:
                    raise ConfigError(f"{stream.source}: task {task.name!r}, suite {suite.name!r}",
                                      f"probe kind {suite.kind!r} is not available with model.backend: mlx",
                                      MLX_PROBE_KINDS)

    def start(self, cfg):
        from clbench.backends.mlx.model import use_device

        if cfg.model.autocast == "bfloat16":
            raise ConfigError("model.autocast", "MLX has no autocast; for bfloat16 compute set model.dtype: bfloat16",
                              ["none", "auto"])
        self._numerics = {"device": use_device(cfg.model.device), "dtype": cfg.model.dtype, "autocast": "none"}
        return {"backend": "mlx", "mlx_device": self._numerics["device"], "numerics": self.numerics}

    @property
    def numerics(self):
        return dict(getattr(self, "_numerics", {}))

    def load(self, cfg, base_dir):
        from clbench.backends.mlx.model import load_mlx_model

        return load_mlx_model(base_dir, cfg.model.dtype, cfg.model.trust_remote_code)

    def seed(self, seed):
        super().seed(seed)
        mx.random.seed(seed)  # LoRA initialisation draws from MLX's generator

    def reference(self, cfg, base_dir, model):
        from clbench.backends.mlx.model import reference_model

        return reference_model(model, seed=cfg.model.seed + 1)

    def view(self, model, tokenizer, batch_size, keep=()):  # keep: nothing is cast on MLX
        from clbench.backends.mlx.lm import MLXLM

        return MLXLM(model, tokenizer, batch_size=batch_size)

    def make_optimizer(self, strategy, model, train_cfg):
        if train_cfg.optimizer != "adamw":
            raise ConfigError("train.optimizer", f"{train_cfg.optimizer} (strategy {strategy.name!r}) is not "
                              "available with model.backend: mlx", ["adamw"])
        divisor = {n: d for names, d in strategy.param_groups() for n in names}
        scale = {n: 1.0 / divisor[n] if divisor[n] is not None else 1.0 for n in strategy.trainable if n in divisor}
        optimizer = adamw(scale, train_cfg.weight_decay)
        optimizer.lr_scale = scale
        return optimizer

    def make_schedule(self, optimizer, train_cfg):
        return MLXSchedule(train_cfg)

    def optimizer_state(self, optimizer):
        return to_torch(optimizer.state_tensors())

    def load_optimizer_state(self, optimizer, state, strategy):
        optimizer.load_state_tensors(optimizer_state_from_torch(state, strategy.trainable))

    def save_adapter(self, path: Path, tensors, metadata):
        with atomic_path(path, suffix=".safetensors") as tmp:  # MLX adds .safetensors to a name without it
            mx.save_safetensors(tmp, tensors, metadata=metadata)

    def load_adapter(self, path):
        return mx.load(str(path))

    # --- model surgery ----------------------------------------------------------------------------
    def prepare_lora_or_full(self, model, options):
        from clbench.backends.mlx.lora import prepare_lora_or_full

        return prepare_lora_or_full(model, options)

    def freeze(self, model):
        model.freeze()
        return model

    def trainable(self, model):
        return dict(tree_flatten(model.trainable_parameters()))

    def parameters(self, model, names):
        params = dict(tree_flatten(model.parameters()))
        return {n: params[n] for n in names}

    def load_parameters(self, model, tensors):
        model.load_weights(list(tensors.items()), strict=False)

    def decoder_blocks(self, model):
        return list(model.layers)

    # --- arrays -----------------------------------------------------------------------------------
    def accumulate(self, total, g):
        return total + g

    def divide(self, g, d):
        return g / d

    def materialize(self, arrays):
        mx.eval(arrays)

    def clip_global_norm(self, grads, max_norm, total=None):
        """mlx's ``clip_grad_norm`` uses torch's rule: scale by ``min(1, max_norm / (norm + 1e-6))``."""
        if not max_norm or not grads:
            return grads
        clipped, _ = optim.clip_grad_norm(grads, max_norm)
        return clipped

    def snapshot(self, params):
        return dict(params)  # MLX arrays are immutable: keeping them is a snapshot

    def from_torch(self, tensor, like):
        return mx.array(tensor.numpy()).astype(like.dtype)

    # --- one step ---------------------------------------------------------------------------------
    def lm_loss(self, model, batch):
        return causal_lm_loss(model, batch)

    def forward_backward(self, model, trainable, loss_fn, batches, keep):
        def loss_and_logs(m, b):
            out = loss_fn(m, b)
            return out.loss, out.logs

        value_and_grad = nn.value_and_grad(model, loss_and_logs)
        grads: dict[str, mx.array] = {}
        losses, extras = [], {}
        with frozen_except(model, trainable, keep):
            for batch in batches:
                batch = to_mx(batch)
                if keep is not None and not keep:  # nothing updates at this step: forward only, for the log
                    (loss, logs), tree = loss_and_logs(model, batch), {}
                else:
                    (loss, logs), tree = value_and_grad(model, batch)
                for name, g in tree_flatten(tree):  # nested {"model": {"layers": [...]}} -> flat names
                    grads[name] = grads[name] + g if name in grads else g
                losses.append(loss)
                for k, v in logs.items():
                    extras.setdefault(k, []).append(v)
        k = len(batches)
        grads = {n: g / k for n, g in grads.items()}  # each micro-batch's loss differentiated as it is; averaged here
        mx.eval(losses, grads, extras)
        return (sum(float(v) for v in losses) / k, {name: sum(float(x) for x in v) / k for name, v in extras.items()},
                grads)

    def apply_gradients(self, optimizer, model, trainable, grads, lr, max_norm, total_norm=None):
        grads = self.clip_global_norm(grads, max_norm)
        updated = optimizer.apply(model, grads, lr, lr_scale=optimizer.lr_scale)
        mx.eval(model.trainable_parameters(), optimizer.arrays())
        return updated
