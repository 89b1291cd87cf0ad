"""A minimal classification loop that drives clbench strategies through the runner's hooks.

The hooks are called in the order ``clbench.run.one_run.run_one`` calls them: ``prepare_model`` and
``mark_trainable`` once; per task ``before_task``, the optimizer from ``param_groups`` (kept across
tasks, as Avalanche keeps its optimizer), ``training_examples``, then per step
``clbench.train.step.optimizer_step`` — the very step the runner takes; ``after_task``; evaluation.
Tasks are seeded from ``(seed, task index)`` as in the runner.

Epochs, not steps, are the unit here, to match Avalanche: an epoch is ``ceil(n_task / batch_size)``
optimizer steps, where ``n_task`` is the current experience's size. A strategy that returns more
records than the task has (replay) gets them in the same number of steps, as larger batches — what
Avalanche's ``ReplayDataLoader`` does when it appends a memory mini-batch to every data mini-batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from clbench.bench.crosscheck.digits import Experience
from clbench.bench.crosscheck.model import DigitsMLP, accuracy
from clbench.seeding import seed_everything, task_seed
from clbench.train.step import optimizer_step
from clbench.train.strategy import Strategy, TaskView


@dataclass(frozen=True)
class LoopConfig:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.9


def collate(records: list[dict]) -> dict[str, torch.Tensor]:
    return {"x": torch.stack([r["x"] for r in records]), "labels": torch.tensor([r["y"] for r in records])}


def epoch_batches(records: list[dict], n_task: int, batch_size: int, gen: torch.Generator):
    """One shuffled pass over ``records`` in ``ceil(n_task / batch_size)`` batches."""
    steps = math.ceil(n_task / batch_size)
    size = math.ceil(len(records) / steps)
    order = torch.randperm(len(records), generator=gen).tolist()
    for k in range(steps):
        chunk = order[k * size:(k + 1) * size]
        if chunk:
            yield collate([records[i] for i in chunk])


def train_clbench(strategy: Strategy, model: DigitsMLP, experiences: tuple[Experience, ...], cfg: LoopConfig,
                  seed: int) -> list[list[float]]:
    """Train ``strategy`` through the stream; return the accuracy matrix R (rows: after task i)."""
    seed_everything(seed)
    model = strategy.prepare_model(model)
    strategy.mark_trainable(model)
    optimizer = None
    global_step = 0
    R: list[list[float]] = []
    for exp in experiences:
        view = TaskView(exp.index, exp.name, exp.train)
        seed_everything(task_seed(seed, exp.index))
        strategy.before_task(view, model)
        if strategy.trains:
            if optimizer is None:
                groups = strategy.backend.param_groups(strategy, cfg.lr)
                optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
            records = strategy.training_examples(view)
            gen = torch.Generator().manual_seed(task_seed(seed, exp.index))
            model.train()
            step = 0
            for _ in range(cfg.epochs):
                for batch in epoch_batches(records, len(view.examples), cfg.batch_size, gen):
                    step += 1
                    optimizer_step(strategy, model, optimizer, [batch], step, global_step + step, cfg.lr,
                                   max_grad_norm=0.0, where=f"experience {exp.name!r}")
            global_step += step
        strategy.after_task(view, model)
        R.append([accuracy(model, e.test_x, e.test_y) for e in experiences])
    return R
