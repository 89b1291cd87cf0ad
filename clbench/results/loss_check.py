"""The silent-divergence guard: did the training loss of each task go down at all?

A learning rate far too high need not give a NaN: the loss can stay flat (or rise) for the whole task
while the run finishes "normally" with scores of 0. Such a run is flagged — in ``metrics.json`` and in
the report — rather than failed: a strategy that trains nothing, or a task already known, can also
leave the loss where it was, and the user decides.

The loss of a task is noisy from batch to batch, so the test compares means: the last quarter of its
steps against the first quarter (one step each for tasks of fewer than four steps). A task is
flagged when the end is not below the start.
"""

from __future__ import annotations


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def loss_trend(losses: list[float]) -> dict | None:
    """``{"start", "end", "fell"}`` of one task's per-step losses; ``None`` without any step."""
    if not losses:
        return None
    k = max(1, len(losses) // 4)
    start, end = _mean(losses[:k]), _mean(losses[-k:])
    return {"start": start, "end": end, "fell": end < start}


def loss_check(log: list[dict], task_names: list[str]) -> dict:
    """``{"per_task": {task: trend}, "not_falling": [tasks whose loss did not fall]}`` from a run's
    step log (records with ``task`` index and ``loss``)."""
    per_task = {}
    for t, name in enumerate(task_names):
        trend = loss_trend([float(r["loss"]) for r in log if r.get("task") == t and "loss" in r])
        if trend is not None:
            per_task[name] = trend
    return {"per_task": per_task, "not_falling": [n for n, tr in per_task.items() if not tr["fell"]]}
