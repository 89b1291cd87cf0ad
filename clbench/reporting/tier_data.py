"""Tier diagnostics of tiered / CMS strategies, read defensively from stored runs (for the tier figure).

The tier timeline and per-tier drift come from each task's ``eval/after_<t>.json``. Two shapes are accepted: the list itself, or the object of
:class:`clbench.train.tiers.updater.TieredUpdater` (``layer_tiers``, ``importance_tiers``, ``cms``, ``surprise``
over one of them) that holds it under its own ``"tiers"`` key::

    "diagnostics": {"tiers": [                      # or {"tiers": {"frequencies": [...], "tiers": [...]}}
        {"frequency": 2,                            # optional: shown in the legend
         "steps": [2, 4, 6, ...],                   # optimizer steps at which this tier updated in task t
         "drift": 0.0123},                          # a number: L2 distance from the task-start value
        ...]}                                       # one dict per tier, fastest first; other keys ignored

``steps`` may count within the task (1-based, as :mod:`clbench.train.tiers.schedule` and the updater do) or globally
(``global_step`` of ``train_log.jsonl``; cumulative lists are cut to the task's range); a step beyond the
task's length marks the list as global. A strategy whose diagnostics hold no list of tier dicts gets no
tier figure; a tier without numeric ``drift`` has no bar, one without a list of ``steps`` no timeline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from clbench.config.periods import NEVER
from clbench.reporting.stats import mean_ci
from clbench.results.aggregate import Run, task_step_ranges


def parse_tiers(diagnostics) -> list[dict] | None:
    """The tier list of one task's diagnostics (either shape in the module docstring) as
    ``[{"steps": [int] | None, "drift": float | None, "frequency": int | "never" | None}]``, else ``None``."""
    tiers = diagnostics.get("tiers") if isinstance(diagnostics, dict) else None
    if isinstance(tiers, dict):  # TieredUpdater's object: the list is one level down
        tiers = tiers.get("tiers")
    if not isinstance(tiers, list) or not tiers or not all(isinstance(t, dict) for t in tiers):
        return None
    out = []
    for t in tiers:
        steps = t.get("steps")
        steps = [int(s) for s in steps] if isinstance(steps, list) and all(
            isinstance(s, (int, float)) and not isinstance(s, bool) for s in steps) else None
        drift = t.get("drift")
        drift = float(drift) if isinstance(drift, (int, float)) and not isinstance(drift, bool) \
            and math.isfinite(drift) else None
        freq = t.get("frequency")
        freq = freq if (isinstance(freq, int) and not isinstance(freq, bool)) or freq == NEVER else None
        out.append({"steps": steps, "drift": drift, "frequency": freq})
    return out


def global_steps(steps: Sequence[int], lo: int, hi: int) -> list[int]:
    """A tier's steps during the task that spans global steps ``lo..hi``, as global steps."""
    length = hi - lo + 1
    if any(s > length for s in steps):  # global (possibly cumulative): keep this task's range
        return sorted(s for s in steps if lo <= s <= hi)
    return sorted(s + lo - 1 for s in steps if s >= 1)


def tier_data(runs: Sequence[Run]) -> dict | None:
    """Per-tier global update steps (first seed with steps) and per-task drift per seed, or ``None``."""
    per_seed = []
    for run in runs:
        ranges = task_step_ranges(run)
        tasks = {t: parse_tiers(run.rows[t].get("diagnostics", {})) for t in ranges}
        tasks = {t: v for t, v in tasks.items() if v is not None}
        if tasks:
            per_seed.append((run, ranges, tasks))
    if not per_seed:
        return None
    n_tiers = max(len(v) for _, _, tasks in per_seed for v in tasks.values())
    timeline, timeline_seed = None, None
    for run, ranges, tasks in per_seed:
        steps = [[] for _ in range(n_tiers)]
        have = False
        for t, tiers in tasks.items():
            for k, tier in enumerate(tiers):
                if tier["steps"] is not None:
                    have = True
                    steps[k] += global_steps(tier["steps"], *ranges[t])
        if have:
            timeline, timeline_seed = [sorted(s) for s in steps], run.seed
            break
    trained = sorted({t for _, _, tasks in per_seed for t in tasks})
    drift = {(t, k): [tasks[t][k]["drift"] for _, _, tasks in per_seed
                      if t in tasks and k < len(tasks[t]) and tasks[t][k]["drift"] is not None]
             for t in trained for k in range(n_tiers)}
    if timeline is None and not any(drift.values()):
        return None
    first_run, first_ranges = per_seed[0][0], per_seed[0][1]
    freqs = [next((tiers[k]["frequency"] for _, _, tasks in per_seed for tiers in tasks.values()
                   if k < len(tiers) and tiers[k]["frequency"] is not None), None) for k in range(n_tiers)]
    return {"n_tiers": n_tiers, "frequencies": freqs, "timeline": timeline, "timeline_seed": timeline_seed,
            "tasks": [first_run.tasks[t] for t in trained], "starts": [first_ranges[t][0] for t in trained],
            "end": max(hi for _, hi in first_ranges.values()),
            "drift": [[mean_ci(drift[(t, k)]) for k in range(n_tiers)] for t in trained]}
