"""The torch backend (the default): transformers + peft models, autograd, torch's AdamW.

Gradients are computed by ``loss.backward()`` into ``.grad`` and handed to strategies as
``{name: p.grad}``; :meth:`TorchBackend.apply_gradients` puts exactly the given gradients back on
``.grad`` (``None`` for every other parameter) before ``optimizer.step()``, so torch's AdamW skips the
others entirely — their moments, step counts and decoupled weight decay do not change. A parameter
outside a step's ``keep`` set has ``requires_grad`` off during that step's forward and backward, so
autograd builds no weight gradient for it and, when the shallow blocks are frozen, the backward pass
stops early.

Mixed precision (``model.autocast``): every forward pass of a run — :meth:`TorchBackend.forward_backward`,
the strategy's task hooks, the probe view — runs inside :meth:`TorchBackend.compute`, ``torch.autocast``
in bfloat16; weights, gradients and optimizer state stay in the weights' dtype, and the optimizer step
runs outside it (M3's Newton–Schulz iterations stay in float32). For a task's training, the frozen
weights are cast once (:meth:`TorchBackend.frozen_cast`) rather than at every forward pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from contextlib import contextmanager
from typing import ClassVar

import torch

from clbench.backends.base import Backend
from clbench.results.files import atomic_write_bytes


class TorchSchedule:
    """transformers' warm-up + constant / linear / cosine schedule over one task."""

    NAMES: ClassVar[dict] = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}

    def __init__(self, optimizer, cfg):
        from transformers import get_scheduler

        self.schedule = get_scheduler(self.NAMES[cfg.schedule], optimizer, num_warmup_steps=cfg.warmup_steps,
                                      num_training_steps=cfg.steps_per_task)

    def lr(self) -> float:
        return self.schedule.get_last_lr()[0]

    def advance(self) -> None:
        self.schedule.step()


class TorchBackend(Backend):
    name = "torch"

    @property
    def surprise(self):
        """Surprise's gradient trick for torch models (tensor hooks)."""
        from clbench.backends import torch_surprise

        return torch_surprise

    device = torch.device("cpu")
    dtype = torch.float32
    autocast_dtype: torch.dtype | None = None
    attention_kernel = "auto"

    # --- the run ----------------------------------------------------------------------------------
    def start(self, cfg):
        """Resolve device, dtype and autocast (a device that is not there is refused before anything is written)."""
        from clbench.modeling.loading import pick_autocast, pick_device, pick_dtype

        self.device = pick_device(cfg.model.device)
        self.dtype = pick_dtype(cfg.model.dtype, self.device)
        self.autocast_dtype = pick_autocast(cfg.model.autocast, self.device, self.dtype)
        self.attention_kernel = cfg.train.attention_kernel
        return {"numerics": self.numerics}

    @property
    def numerics(self):
        def name(dtype):
            return str(dtype).removeprefix("torch.") if dtype is not None else "none"

        return {"device": str(self.device), "dtype": name(self.dtype), "autocast": name(self.autocast_dtype)}

    def compute(self):
        from clbench.modeling.loading import autocast_context

        return autocast_context(self.device, self.autocast_dtype)

    @contextmanager
    def training_compute(self):
        with self.compute(), _attention(self.attention_kernel):
            yield

    def frozen_cast(self, model, keep=()):
        from clbench.modeling.frozen_cast import frozen_weights_cast

        return frozen_weights_cast(model, self.autocast_dtype, keep)

    def evaluation_weights(self, model):
        from clbench.modeling.merged_lora import lora_merged

        # entered before the view: the merge reads the float32 base weights, which the view's cast then
        # finds in bf16 and leaves alone
        return lora_merged(model, self.autocast_dtype)

    def load(self, cfg, base_dir):
        """The base model (after :meth:`start`, which resolved device, dtype and autocast)."""
        from clbench.modeling.loading import load_causal_lm

        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        return load_causal_lm(base_dir, cfg.model.device, cfg.model.dtype, cfg.model.trust_remote_code)

    def place(self, model):
        return model.to(self.device)

    def reference(self, cfg, base_dir, model):
        from clbench.modeling.loading import reference_model

        return reference_model(base_dir, seed=cfg.model.seed + 1, device=self.device, dtype=self.dtype,
                               trust_remote_code=cfg.model.trust_remote_code)

    def view(self, model, tokenizer, batch_size, keep=()):
        from clbench.eval.torch_lm import TorchLM

        return TorchLM(model, tokenizer, batch_size=batch_size, autocast=self.autocast_dtype, keep=keep)

    def param_groups(self, strategy, lr: float) -> list[dict]:
        """torch parameter groups of ``strategy.param_groups()``: a group with a divisor gets ``lr / d``."""
        groups = []
        for names, divisor in strategy.param_groups():
            group = {"params": [strategy.trainable[n] for n in names]}
            if divisor is not None:
                group["lr"] = lr / divisor
            groups.append(group)
        return groups

    def make_optimizer(self, strategy, model, train_cfg):
        groups = self.param_groups(strategy, train_cfg.lr)
        if not any(g["params"] for g in groups):
            raise RuntimeError(f"strategy {strategy.name!r} gave the optimizer no parameters")
        if train_cfg.optimizer == "m3":  # Multi-scale Momentum Muon; masks apply as to AdamW (None grads skipped)
            from clbench.train.m3 import M3

            return M3(groups, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay,
                      betas=(0.9, 0.999, train_cfg.m3_beta3), alpha=train_cfg.m3_alpha, ns_steps=train_cfg.m3_ns_steps,
                      slow_chunk=train_cfg.m3_slow_chunk, eps=train_cfg.m3_eps)
        return torch.optim.AdamW(groups, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)

    def make_schedule(self, optimizer, train_cfg):
        return TorchSchedule(optimizer, train_cfg)

    def optimizer_state(self, optimizer):
        return optimizer.state_dict()

    def load_optimizer_state(self, optimizer, state, strategy):
        optimizer.load_state_dict(state)

    def save_adapter(self, path, tensors, metadata):
        from safetensors.torch import save

        tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        atomic_write_bytes(path, save(tensors, metadata=metadata))

    def load_adapter(self, path):
        from safetensors.torch import load_file

        return load_file(path)

    # --- model surgery ----------------------------------------------------------------------------
    def prepare_lora_or_full(self, model, options):
        from clbench.modeling.lora import prepare_lora_or_full

        return prepare_lora_or_full(model, options)

    def freeze(self, model):
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def trainable(self, model):
        return {n: p for n, p in model.named_parameters() if p.requires_grad}

    def parameters(self, model, names):
        params = dict(model.named_parameters())
        return {n: params[n] for n in names}

    def load_parameters(self, model, tensors):
        params = dict(model.named_parameters())
        with torch.no_grad():
            for n, t in tensors.items():
                params[n].copy_(t.to(params[n].device, params[n].dtype))

    def decoder_blocks(self, model):
        from clbench.modeling.blocks import decoder_blocks

        return decoder_blocks(model)

    # --- arrays -----------------------------------------------------------------------------------
    def accumulate(self, total, g):
        return total.add_(g)

    def accumulate_all(self, totals, grads):
        torch._foreach_add_(list(totals), list(grads))  # one call for every buffer: the same sums as add_
        return list(totals)

    def divide(self, g, d):
        return g.div_(d)

    def materialize(self, arrays):
        pass

    def clip_global_norm(self, grads, max_norm, total=None):
        if max_norm and grads:
            tensors = list(grads.values())
            if total is None:
                total = torch.nn.utils.get_total_norm(tensors)
            # clip_grads_with_norm_'s rule on the gradient tensors themselves (in place):
            # scale by min(1, max_norm / (norm + 1e-6))
            torch._foreach_mul_(tensors, torch.clamp(max_norm / (total + 1e-6), max=1.0))
        return grads

    def snapshot(self, params):
        return {n: p.detach().clone() for n, p in params.items()}

    def from_torch(self, tensor, like):
        return tensor.to(like.device, like.dtype).clone()

    # --- one step ---------------------------------------------------------------------------------
    def lm_loss(self, model, batch):
        """``model(**batch).loss``, with the output layer at the labelled positions only
        (``clbench.modeling.lm_loss``)."""
        from clbench.modeling.lm_loss import causal_lm_loss

        return causal_lm_loss(model, batch)

    def forward_backward(self, model, trainable, loss_fn, batches, keep):
        device = next(model.parameters()).device
        k = len(batches)
        loss_sum, logs = 0.0, {}
        with _only_requiring_grad(trainable, keep), self.training_compute():
            for batch in batches:
                batch = {key: v.to(device) for key, v in batch.items()}
                out = loss_fn(model, batch)
                if out.loss.requires_grad:
                    # as it is: a hook on an activation sees this micro-batch's ∇_y L (surprise's target,
                    # the local rule's δ); the sum is averaged once, below
                    out.loss.backward()
                loss_sum += float(out.loss.detach())
                for name, v in out.logs.items():  # a logged tensor may be part of the graph: its value only
                    logs[name] = logs.get(name, 0.0) + float(v.detach() if isinstance(v, torch.Tensor) else v) / k
        if k > 1:
            _average_gradients(model, k)
        grads = {n: p.grad for n, p in trainable.items() if p.grad is not None}
        return loss_sum / k, logs, grads

    def apply_gradients(self, optimizer, model, trainable, grads, lr, max_norm, total_norm=None):
        applied = []
        for n, p in trainable.items():
            g = grads.get(n)
            p.grad = g
            if g is not None:
                applied.append(p)
        if max_norm and applied:
            if total_norm is None:
                torch.nn.utils.clip_grad_norm_(applied, max_norm)
            else:
                torch.nn.utils.clip_grads_with_norm_(applied, max_norm, total_norm)
        optimizer.step()
        return sum(p.numel() for p in applied)

    def clear_gradients(self, trainable):
        for p in trainable.values():
            p.grad = None


def _attention(kernel: str):
    """``train.attention_kernel``: torch's own choice of scaled-dot-product attention kernel, or the math one.
    (On CPU torch picks flash attention, whose backward is tiled for long sequences and costs a large share
    of a short-sequence step; the math kernel's is a few small products. Measured: docs/findings.md.)"""
    if kernel == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def _average_gradients(model, k: int) -> None:
    """Divide every gradient the step accumulated by its ``k`` micro-batches: the trainable parameters' and
    any other weight's that a strategy reads (``effective_update_weights``' base weights). Each step
    starts with none (``clear_gradients``; a base weight's is dropped once read)."""
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.grad.div_(k)


@contextmanager
def _only_requiring_grad(trainable: Mapping[str, torch.nn.Parameter], keep):
    """``requires_grad`` on only for the parameters in ``keep`` (None: all) during the step."""
    if keep is None:
        yield
        return
    keep = set(keep)
    unknown = sorted(keep - set(trainable))
    if unknown:
        raise KeyError(f"grad_names returned parameters that are not trainable: {unknown[:5]}")
    for n, p in trainable.items():
        p.requires_grad_(n in keep)
    try:
        yield
    finally:
        for p in trainable.values():
            p.requires_grad_(True)
