"""Where a strategy hooks into training: the step loop of one task.

The loop is the same for every strategy; the strategy decides the loss (``loss``), what is trainable
and active (``before_step``) and how gradients become parameter changes (``apply_update``). The loop
owns the counters, gradient accumulation, the learning-rate schedule and the per-step log.
"""

from __future__ import annotations

import math
import time

import torch

from clbench.config import TrainConfig
from clbench.data import batch_stream, count_tokens
from clbench.progress import bar
from clbench.strategy import Strategy, TaskView, UpdateContext


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


def train_task(model, tokenizer, strategy: Strategy, task: TaskView, optimizer, cfg: TrainConfig,
               max_length: int, seed: int, global_step: int, progress: bool = True) -> list[dict]:
    """Run ``cfg.steps_per_task`` optimizer steps on ``task``; return the per-step log records."""
    device = next(model.parameters()).device
    records = strategy.training_examples(task)
    encoded = [task.encode(r) for r in records]
    batches = batch_stream(encoded, cfg.batch_size, tokenizer.pad_token_id, seed=seed)
    schedule = make_schedule(optimizer, cfg)
    model.train()
    log: list[dict] = []
    steps = bar(range(1, cfg.steps_per_task + 1), desc=f"train {task.name}", enabled=progress, leave=False,
                unit="step")
    for step in steps:
        t0 = time.perf_counter()
        strategy.before_step(step)
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
        if not math.isfinite(loss):
            raise RuntimeError(f"task {task.name!r} step {step}: loss is {loss}; lower train.lr or check the data")
        lr = schedule.get_last_lr()[0]
        updated = strategy.apply_update(UpdateContext(step, global_step + step, optimizer, cfg.max_grad_norm))
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        log.append({"task": task.index, "step": step, "global_step": global_step + step, "loss": loss, "lr": lr,
                    "step_time": time.perf_counter() - t0, "tokens": tokens, "updated_elements": updated,
                    **extra, **strategy.step_log()})
        if progress and step % 10 == 0:
            steps.set_postfix(loss=f"{loss:.3f}")
    return log
