"""Where a strategy hooks into training: the step loop of one task, the same on every backend.

The loop owns the counters, the batches (the strategy's training records, encoded, in the task seed's
order), the learning-rate schedule and the per-step log (handed, record by record, to the caller's
``on_step`` as each step ends: the runner streams curves and progress from it); each step is
:func:`clbench.train.step.optimizer_step`, which calls the strategy's ``before_step``, ``grad_names``,
``loss`` and ``apply_update``. The backend (``strategy.backend``) computes gradients and applies them.
"""

from __future__ import annotations

import time

from clbench.config.experiment import TrainConfig
from clbench.data.encoding import batch_stream, learnable
from clbench.errors import ConfigError
from clbench.progress import bar
from clbench.train.step import optimizer_step
from clbench.train.strategy import Strategy, TaskView


def task_batches(tokenizer, strategy, task: TaskView, cfg: TrainConfig, seed: int):
    """The records the strategy trains on for ``task``, encoded, as endless batches in ``seed``'s order."""
    encoded = [task.encode(r) for r in strategy.training_examples(task)]
    if encoded and not any(learnable(e) for e in encoded):
        raise ConfigError("model.max_length", f"no training record of task {task.name!r} keeps a token to learn "
                          "within model.max_length tokens (the prompts fill it); raise model.max_length")
    return batch_stream(encoded, cfg.batch_size, tokenizer.pad_token_id, seed=seed,
                        group_by_length=cfg.group_by_length)


def train_task(model, tokenizer, strategy: Strategy, task: TaskView, optimizer, cfg: TrainConfig, seed: int,
               global_step: int, progress: bool = True, on_step=None) -> list[dict]:
    """Run ``cfg.steps_per_task`` optimizer steps on ``task``; return the per-step log records.

    ``on_step(record)``, if given, sees each step's log record as the step ends. It is side output only
    (curves, progress): it must not touch the model, the optimizer or the random state."""
    batches = task_batches(tokenizer, strategy, task, cfg, seed)
    schedule = strategy.backend.make_schedule(optimizer, cfg)
    model.train()
    log: list[dict] = []
    steps = bar(range(1, cfg.steps_per_task + 1), desc=f"train {task.name}", enabled=progress, leave=False,
                unit="step")
    for step in steps:
        t0 = time.perf_counter()
        micro = [next(batches) for _ in range(cfg.grad_accum)]
        r = optimizer_step(strategy, model, optimizer, micro, step, global_step + step, schedule.lr(),
                           cfg.max_grad_norm, where=f"task {task.index} ({task.name!r})")
        schedule.advance()
        log.append({"task": task.index, "step": step, "global_step": global_step + step, "loss": r.loss, "lr": r.lr,
                    "step_time": time.perf_counter() - t0, "tokens": r.tokens, "updated_elements": r.updated,
                    **r.logs, **strategy.step_log()})
        if on_step is not None:
            on_step(log[-1])
        if progress and step % 10 == 0:
            steps.set_postfix(loss=f"{r.loss:.3f}")
    return log
