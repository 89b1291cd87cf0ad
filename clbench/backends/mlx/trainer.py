"""The MLX step of one task: the torch trainer's loop (``clbench.train.loop.step_loop``) with MLX gradients.

Shared with torch, so both backends see the same data in the same order at the same learning rate and
log the same fields: the loop itself, the encoded records and their batches
(``clbench.train.loop.task_batches``: ``clbench.data.encoding.batch_stream``, fixed by the seed), and the
learning-rate schedule, which *is* the torch trainer's ``make_schedule`` (transformers' schedulers)
driven on a placeholder optimizer — no second implementation of warm-up and decay to drift apart.

Per step: the strategy may freeze what needs no gradient this step (``grad_names``: an inactive tier is
neither computed nor applied), ``nn.value_and_grad`` computes the loss and the gradients, which are
flattened with ``tree_flatten`` into ``{name: gradient}``, averaged over micro-batches, and handed to
``strategy.apply_update``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager

import mlx.core as mx
from mlx import nn
from mlx.utils import tree_flatten

from clbench.backends.mlx.optim import PerTensor
from clbench.backends.mlx.strategy import MLXStrategy, UpdateContext
from clbench.config.experiment import TrainConfig
from clbench.data.encoding import count_tokens
from clbench.train.loop import StepResult, check_finite, make_schedule, step_loop, task_batches
from clbench.train.strategy import TaskView


def lr_schedule(cfg: TrainConfig) -> list[float]:
    """Learning rate of steps 1..``steps_per_task`` (index ``step - 1``), from the torch trainer's schedule."""
    import torch

    placeholder = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    schedule = make_schedule(placeholder, cfg)
    lrs = []
    for _ in range(cfg.steps_per_task):
        lrs.append(schedule.get_last_lr()[0])
        placeholder.step()  # no gradient: changes nothing, keeps torch's call-order check quiet
        schedule.step()
    return lrs


def to_mx(batch: dict) -> dict[str, mx.array]:
    """A collated torch batch as int32 MLX arrays (``input_ids``, ``labels``; the mask is implicit)."""
    return {k: mx.array(batch[k].numpy().astype("int32")) for k in ("input_ids", "labels")}


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


def train_task(model: nn.Module, tokenizer, strategy: MLXStrategy, task: TaskView, optimizer: PerTensor,
               cfg: TrainConfig, seed: int, global_step: int, progress: bool = True) -> list[dict]:
    """Run ``cfg.steps_per_task`` optimizer steps on ``task``; return the per-step log records."""
    batches = task_batches(tokenizer, strategy, task, cfg, seed)
    lrs = lr_schedule(cfg)
    loss_and_grad = nn.value_and_grad(model, strategy.loss)
    model.train()

    def take_step(step: int) -> StepResult:
        grads: dict[str, mx.array] = {}
        losses, extras, tokens = [], {}, 0
        keep = strategy.grad_names(step)
        with frozen_except(model, strategy.trainable, keep):
            for _ in range(cfg.grad_accum):
                batch = next(batches)
                if keep is not None and not keep:  # nothing updates at this step: forward only, for the log
                    (loss, logs), tree = strategy.loss(model, to_mx(batch)), {}
                else:
                    (loss, logs), tree = loss_and_grad(model, to_mx(batch))
                for name, g in tree_flatten(tree):  # nested {"model": {"layers": [...]}} -> flat names
                    grads[name] = grads[name] + g if name in grads else g
                losses.append(loss)
                for k, v in logs.items():
                    extras.setdefault(k, []).append(v)
                tokens += count_tokens(batch)
        grads = {n: g / cfg.grad_accum for n, g in grads.items()}
        mx.eval(losses, grads, extras)
        loss_value = sum(float(v) for v in losses) / cfg.grad_accum
        check_finite(task, step, loss_value)
        lr = lrs[step - 1]
        updated = strategy.apply_update(UpdateContext(step, global_step + step, grads, lr, optimizer, model,
                                                      cfg.max_grad_norm))
        mx.eval(model.trainable_parameters(), optimizer.arrays())
        return StepResult(loss_value, lr, tokens, updated,
                          {k: sum(float(x) for x in v) / cfg.grad_accum for k, v in extras.items()})

    return step_loop(task, strategy, cfg, global_step, progress, take_step)
