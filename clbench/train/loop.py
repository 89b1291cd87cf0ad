"""Where a strategy hooks into training: the step loop of one task.

The loop is the same for every strategy; the strategy decides the loss (``loss``), what is trainable
and active (``before_step``) and how gradients become parameter changes (``apply_update``). The loop
owns the counters, gradient accumulation, the learning-rate schedule and the per-step log.

:func:`step_loop` (counters, hooks, log) is shared with the MLX trainer (``clbench.backends.mlx.trainer``),
which gives its own step — the gradient computation is the one part that differs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from clbench.config.experiment import TrainConfig
from clbench.data.encoding import batch_stream, count_tokens
from clbench.progress import bar
from clbench.train.strategy import Strategy, TaskView, UpdateContext


def make_optimizer(strategy: Strategy, model, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the strategy's parameter groups (a group may override lr or weight_decay)."""
    groups = strategy.param_groups(model)
    if not any(g["params"] for g in groups):
        raise RuntimeError(f"strategy {strategy.name!r} gave the optimizer no parameters")
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_schedule(optimizer, cfg: TrainConfig):
    """Warm-up then constant / linear / cosine decay over one task (transformers' schedulers)."""
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[cfg.schedule]
    return get_scheduler(name, optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.steps_per_task)


@dataclass
class StepResult:
    """What one optimizer step reports to the step loop's log."""

    loss: float  # the main loss, averaged over micro-batches
    lr: float
    tokens: int
    updated: int  # parameter elements the update changed
    logs: dict[str, float]  # the strategy's named scalars, averaged over micro-batches


def task_batches(tokenizer, strategy, task: TaskView, cfg: TrainConfig, seed: int):
    """The records the strategy trains on for ``task``, encoded, as endless batches in ``seed``'s order."""
    encoded = [task.encode(r) for r in strategy.training_examples(task)]
    return batch_stream(encoded, cfg.batch_size, tokenizer.pad_token_id, seed=seed)


def check_finite(task: TaskView, step: int, loss: float) -> None:
    """Stop a diverged run before its update is applied."""
    if not math.isfinite(loss):
        raise RuntimeError(f"task {task.name!r} step {step}: loss is {loss}; lower train.lr or check the data")


def step_loop(task: TaskView, strategy, cfg: TrainConfig, global_step: int, progress: bool,
              take_step: Callable[[int], StepResult]) -> list[dict]:
    """The loop of every backend: step counters, ``before_step``, the per-step log, the progress bar.

    ``take_step(step)`` does optimizer step ``step`` (1-based within the task): forward and backward
    over the micro-batches, :func:`check_finite`, ``strategy.apply_update``.
    """
    log: list[dict] = []
    steps = bar(range(1, cfg.steps_per_task + 1), desc=f"train {task.name}", enabled=progress, leave=False,
                unit="step")
    for step in steps:
        t0 = time.perf_counter()
        strategy.before_step(step)
        r = take_step(step)
        log.append({"task": task.index, "step": step, "global_step": global_step + step, "loss": r.loss, "lr": r.lr,
                    "step_time": time.perf_counter() - t0, "tokens": r.tokens, "updated_elements": r.updated,
                    **r.logs, **strategy.step_log()})
        if progress and step % 10 == 0:
            steps.set_postfix(loss=f"{r.loss:.3f}")
    return log


def train_task(model, tokenizer, strategy: Strategy, task: TaskView, optimizer, cfg: TrainConfig,
               max_length: int, seed: int, global_step: int, progress: bool = True) -> list[dict]:
    """Run ``cfg.steps_per_task`` optimizer steps on ``task``; return the per-step log records."""
    device = next(model.parameters()).device
    batches = task_batches(tokenizer, strategy, task, cfg, seed)
    schedule = make_schedule(optimizer, cfg)
    model.train()

    def take_step(step: int) -> StepResult:
        loss_sum, tokens, extra = 0.0, 0, {}
        for _ in range(cfg.grad_accum):
            batch = {k: v.to(device) for k, v in next(batches).items()}
            out = strategy.loss(model, batch)
            (out.loss / cfg.grad_accum).backward()
            loss_sum += float(out.loss.detach())
            tokens += count_tokens(batch)
            for k, v in out.logs.items():
                extra[k] = extra.get(k, 0.0) + float(v) / cfg.grad_accum
        loss = loss_sum / cfg.grad_accum
        check_finite(task, step, loss)
        lr = schedule.get_last_lr()[0]
        updated = strategy.apply_update(UpdateContext(step, global_step + step, optimizer, cfg.max_grad_norm))
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        return StepResult(loss, lr, tokens, updated, extra)

    return step_loop(task, strategy, cfg, global_step, progress, take_step)
