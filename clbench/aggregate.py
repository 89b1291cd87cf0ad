"""Stored runs → one pandas row per run (the table every report is built from).

Reports never retrain and never read a model: only ``config.json``, ``metrics.json`` and
``matrix.json`` of finished runs. Each row keeps its run directory, so any number in a table can be
traced back to the files (and, from there, to per-item predictions).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from clbench.results import find_runs, load_run

METRICS = ["acc", "bwt", "fwt", "forgetting", "learning_acc", "general_retention"]
COST = ["train_seconds", "tokens", "optimizer_steps", "updated_elements", "trainable_parameters"]


def runs_frame(paths, suite: str | None = None) -> pd.DataFrame:
    """One row per finished run: stream, strategy label, seed, the metrics of ``suite`` (default: the
    stream's primary suite), cost, and the run directory."""
    rows = []
    for path in find_runs(paths):
        run = load_run(path)
        cfg, met = run["config"], run["metrics"]
        name = suite or met["primary_metric"]
        if name not in met["suites"]:
            continue
        m = met["suites"][name]
        rows.append({"experiment": cfg["experiment"], "stream": cfg["stream"]["name"],
                     "strategy": cfg["strategy"]["label"], "strategy_name": cfg["strategy"]["name"],
                     "seed": cfg["seed"], "suite": name, **{k: m[k] for k in METRICS},
                     **{k: met["cost"].get(k) for k in COST}, "path": str(Path(path))})
    if not rows:
        raise FileNotFoundError(f"no finished runs (directories with DONE) under {', '.join(map(str, paths))}")
    return pd.DataFrame(rows).sort_values(["stream", "strategy", "seed"], kind="stable").reset_index(drop=True)


def mean_matrix(paths, stream: str, strategy: str, suite: str) -> tuple[list[str], list[list[float]]]:
    """Task names and the seed-averaged matrix R of one (stream, strategy) for ``suite``."""
    mats = []
    tasks: list[str] = []
    for path in find_runs(paths):
        run = load_run(path)
        if run["config"]["stream"]["name"] == stream and run["config"]["strategy"]["label"] == strategy:
            tasks = run["matrix"]["tasks"]
            mats.append(run["matrix"]["suites"][suite]["R"])
    if not mats:
        raise KeyError(f"no runs of {strategy!r} on {stream!r}")
    n = len(mats)
    return tasks, [[None if any(m[i][j] is None for m in mats) else sum(m[i][j] for m in mats) / n
                    for j in range(len(tasks))] for i in range(len(tasks))]
