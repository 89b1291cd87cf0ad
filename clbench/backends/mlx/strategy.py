"""The MLX strategy API: the torch hook order (``clbench.train.strategy``), with MLX's functional gradients.

The runner and trainer (``clbench.backends.mlx.runner`` / ``.trainer``) call, for one run::

    s = Strategy(options, seed=seed, train=train_config)
    model = s.prepare_model(model)                  # once: LoRA (mlx-lm tuner) or full
    s.mark_trainable(model)                         # fixes s.trainable: {flat name: array}
    for task in stream:
        pretrained → s.observe_pretrained(task); continue
        examples = s.training_examples(task)
        s.before_task(task, model)
        optimizer = adamw(s.trainable)               # .optim: one AdamW per tensor (runner-owned)
        for step in 1..steps_per_task:
            s.before_step(step)
            only = s.grad_names(step)               # names that need a gradient (None: every trainable)
            for each micro-batch:
                loss, logs = s.loss(model, batch)   # under nn.value_and_grad; gradients flattened
            n = s.apply_update(UpdateContext(step, grads={name: g}, lr, optimizer, ...))
        s.after_task(task, model)

What differs from torch, and why: ``nn.value_and_grad`` returns gradients as a *nested* tree; the
trainer flattens it with ``mlx.utils.tree_flatten`` before any strategy sees it, so strategies filter
``{"model.layers.0.self_attn.q_proj.lora_a": g, ...}`` by name (seed 002's critical bug was filtering
the nested tree by flat names and matching nothing). There is no ``.grad`` to zero: the gradients of a
step are a value handed to :meth:`apply_update`, and a strategy that accumulates keeps its own buffers.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import mlx.core as mx
import mlx.optimizers as optim
from mlx import nn
from mlx.utils import tree_flatten

from clbench.backends.mlx.lora import prepare_lora_or_full
from clbench.backends.mlx.optim import PerTensor
from clbench.data.encoding import IGNORE
from clbench.modeling.lora import LoraOptions
from clbench.train.strategy import StrategyBase


@dataclass
class UpdateContext:
    """What :meth:`MLXStrategy.apply_update` may use."""

    step: int  # 1-based optimizer step within the current task
    global_step: int
    grads: dict[str, mx.array]  # flat {parameter name: gradient}, averaged over micro-batches
    lr: float  # the scheduled learning rate of this step
    optimizer: PerTensor
    model: nn.Module
    max_grad_norm: float


def causal_lm_loss(model: nn.Module, batch: dict[str, mx.array]) -> mx.array:
    """Mean next-token cross-entropy over labelled tokens (labels ``-100`` ignored), as transformers'
    causal-LM loss. Right padding needs no mask: causal attention never looks at later positions."""
    logits = model(batch["input_ids"])[:, :-1].astype(mx.float32)
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    ce = nn.losses.cross_entropy(logits, mx.where(keep, targets, 0), reduction="none")
    return (ce * keep).sum() / mx.maximum(keep.sum(), 1)


def clip_by_global_norm(grads: dict[str, mx.array], max_norm: float) -> tuple[dict[str, mx.array], float | None]:
    """Clip the global norm of ``grads`` (only what updates this step); 0 disables it. mlx's
    ``clip_grad_norm`` uses torch's rule: scale by ``min(1, max_norm / (norm + 1e-6))``."""
    if not max_norm or not grads:
        return grads, None
    clipped, norm = optim.clip_grad_norm(grads, max_norm)
    return clipped, float(norm)


class MLXStrategy(StrategyBase):
    """Base class: plain sequential fine-tuning of whatever ``prepare_model`` leaves trainable (sft).

    The task-level hooks, their defaults and plain-data persistence are ``clbench.train.strategy.StrategyBase``'s,
    shared with torch; what is here uses MLX arrays."""

    Options = LoraOptions
    trainable: dict[str, mx.array]

    # --- set-up -------------------------------------------------------------------------------------
    def prepare_model(self, model: nn.Module) -> nn.Module:
        return prepare_lora_or_full(model, self.options)

    def mark_trainable(self, model: nn.Module) -> None:
        """Record the trainable parameters now (flat names) as the strategy's trainable set."""
        self.trainable = dict(tree_flatten(model.trainable_parameters()))
        if not self.trainable and self.requires_trainable:
            raise RuntimeError(f"strategy {self.name!r} left no trainable parameter in the model")

    # --- per step ----------------------------------------------------------------------------------
    def grad_names(self, step: int) -> Collection[str] | None:
        """Parameters whose gradient this step needs (others are frozen for the step and not
        computed); ``None`` means every trainable parameter."""
        return None

    def loss(self, model: nn.Module, batch: dict[str, mx.array]) -> tuple[mx.array, dict[str, mx.array]]:
        """The loss of one micro-batch and named scalars for the log (default: the causal-LM loss)."""
        return causal_lm_loss(model, batch), {}

    def apply_update(self, ctx: UpdateContext) -> int:
        """Apply this step's gradients; return how many parameter elements were updated."""
        grads, _ = clip_by_global_norm(ctx.grads, ctx.max_grad_norm)
        return ctx.optimizer.apply(ctx.model, grads, ctx.lr)

    # --- persistence -------------------------------------------------------------------------------
    def checkpoint_tensors(self, model: nn.Module) -> dict[str, mx.array]:
        """The trainable parameters only (the adapter, not the base model)."""
        params = dict(tree_flatten(model.parameters()))
        return {n: params[n] for n in self.trainable}

    def load_checkpoint_tensors(self, model: nn.Module, tensors: dict[str, mx.array]) -> None:
        mismatch = sorted(set(self.trainable) ^ set(tensors))
        if mismatch:
            raise RuntimeError(f"checkpoint does not match the model's trainable parameters: {mismatch[:5]}")
        model.load_weights(list(tensors.items()), strict=False)

    @classmethod
    def options_from(cls, data: dict, where: str):
        """Parsed and validated by the torch strategy of the same name: one definition of every option
        (keys, defaults, checks), so a grid file means the same on either backend."""
        from clbench.train import registry

        return registry.get(cls.name).options_from(data, where)
