"""The silent-divergence guard: did the training loss of each task go down at all?

A learning rate far too high need not give a NaN: the loss can stay flat (or rise) for the whole task
while the run finishes "normally" with scores of 0. Such a run is flagged — in ``metrics.json`` and in
the report — rather than failed: a strategy that trains nothing, or a task already known, can also
leave the loss where it was, and the user decides.

The start is the loss of the task's first step (computed before the task's first update: the model
as the task found it); the end is the mean loss of the last quarter of its steps (a mean, because
the loss is noisy from batch to batch). A task is flagged when the end is not below the start —
a first-quarter mean would hide the case that matters, a loss that jumps up in the first steps and
never comes back down. A task of fewer than :data:`MIN_STEPS` steps is not judged (``fell`` is
``None``): a batch or two against another says nothing (a 3-step micro run "fails" by chance).
"""

from __future__ import annotations

MIN_STEPS = 8  # a last quarter of at least two steps


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def loss_trend(losses: list[float]) -> dict | None:
    """``{"start", "end", "fell"}`` of one task's per-step losses (``fell`` ``None`` for fewer than
    :data:`MIN_STEPS`); ``None`` without any step."""
    if not losses:
        return None
    start, end = losses[0], _mean(losses[-max(1, len(losses) // 4):])
    return {"start": start, "end": end, "fell": end < start if len(losses) >= MIN_STEPS else None}


def loss_check(log: list[dict], task_names: list[str]) -> dict:
    """``{"per_task": {task: trend}, "not_falling": [tasks whose loss did not fall]}`` from a run's
    step log (records with ``task`` index and ``loss``)."""
    per_task = {}
    for t, name in enumerate(task_names):
        trend = loss_trend([float(r["loss"]) for r in log if r.get("task") == t and "loss" in r])
        if trend is not None:
            per_task[name] = trend
    return {"per_task": per_task, "not_falling": [n for n, tr in per_task.items() if tr["fell"] is False]}
