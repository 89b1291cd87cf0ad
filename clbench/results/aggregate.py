"""Stored runs → the numbers every report is built from (one record per run, grouped per strategy).

Reports never retrain and never read a model: only the files of finished runs (``config.json``,
``provenance.json``, ``matrix.json``, ``metrics.json``, ``eval/after_<t>.json`` and
``train_log.jsonl``; layout in :mod:`clbench.results.files`). Each record keeps its run directory, so any
number in a table can be traced back to the files (and, from there, to per-item predictions).

Runs are grouped by stream × strategy label (a label names one strategy with one set of options).
Seeds are what a group averages over, so a group whose runs differ in anything but the seed, or that
holds one seed twice, is refused: averaging them would silently mix experiments. Two results folders
given together that both hold a label's seed (before and after a change, two machines) are compared,
not refused: each of those labels is shown once per folder, as ``<label> [<folder tag>]``
(:func:`folder_tags`, :func:`mark_folders`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path, PurePath

import pandas as pd

from clbench.config.experiment import model_record
from clbench.data.readers import text_lines
from clbench.errors import ConfigError
from clbench.results.files import RunFiles, load_run, read_json, stored_pretrained
from clbench.results.inventory import Inventory, path_list, require, take_inventory

METRICS = ["acc", "bwt", "fwt", "fwt_base", "forgetting", "learning_acc", "general_retention"]
COST = ["train_seconds", "tokens", "optimizer_steps", "updated_elements", "trainable_parameters"]
# config.json fields that may differ between the seeds of one group (everything else must match)
PER_SEED_FIELDS = ("seed", "experiment", "eval")


@dataclass(frozen=True)
class Run:
    """One finished run, as stored."""

    path: Path
    config: dict
    provenance: dict
    matrix: dict
    metrics: dict
    rows: tuple[dict, ...]  # eval/after_<t>.json for every task (scores, cost, strategy diagnostics)
    log: tuple[dict, ...]  # train_log.jsonl: one record per optimizer step
    folder: str = ""  # the tag of the given results folder it was found under, when several were given
    tagged: bool = False  # its label shares a seed with another folder's: the label carries the folder tag

    @property
    def stream(self) -> str:
        return self.config["stream"]["name"]

    @property
    def pretrained(self) -> list[bool]:
        """For each task, whether it was pretrained (``clbench.results.files.stored_pretrained``)."""
        return stored_pretrained(self.config)

    @property
    def label(self) -> str:
        """The strategy label, plus `` @<order>`` for a task order other than the stream file's
        (``clbench.run.orders``): each order is its own row; ``clbench.reporting.orders`` averages them.
        Then `` [<folder tag>]`` when the run is compared with another folder's (:func:`mark_folders`)."""
        order = self.config.get("order")
        label = self.config["strategy"]["label"]
        label = f"{label} @{order['name']}" if order else label
        return f"{label} [{self.folder}]" if self.tagged else label

    @property
    def strategy_label(self) -> str:
        """The strategy label without the task order, with the folder tag when :attr:`label` has it."""
        label = self.config["strategy"]["label"]
        return f"{label} [{self.folder}]" if self.tagged else label

    @property
    def seed(self) -> int:
        return self.config["seed"]

    @property
    def tasks(self) -> list[str]:
        return list(self.matrix["tasks"])

    def suite(self, name: str) -> dict:
        """``metrics.json`` → suites → ``name`` (ACC, BWT, ...), with a clear error if it is missing."""
        suites = self.metrics["suites"]
        if name not in suites:
            raise ConfigError(f"{self.path / 'metrics.json'}", f"no probe suite {name!r}", suites)
        return suites[name]

    def R(self, suite: str) -> list[list[float | None]]:
        return self.matrix["suites"][suite]["R"]


def read_run(path: Path) -> Run:
    """One finished run's files as a :class:`Run`; a missing, corrupt or incomplete file raises
    (``OSError``, ``ConfigError``, ``ValueError``) naming it."""
    files = RunFiles(path)
    base = load_run(path)
    require(base["config"], ("stream.name", "strategy.label", "seed"), "config.json")
    require(base["matrix"], ("tasks", "suites"), "matrix.json")
    require(base["metrics"], ("primary_metric", "suites"), "metrics.json")
    n_tasks = len(base["matrix"]["tasks"])
    rows = tuple(read_json(files.after(t)) for t in range(n_tasks))
    log = ()
    if files.train_log.exists():
        log = tuple(json.loads(line) for _, line in text_lines(files.train_log) if line.strip())
    return Run(Path(path), base["config"], base["provenance"], base["matrix"], base["metrics"], rows, log)


def load_inventory(paths) -> Inventory:
    """The finished runs under ``paths`` (one path or a list; in path order), and the unfinished and
    unreadable ones."""
    return take_inventory(path_list(paths), read_run)


def load_runs(paths, inv: Inventory | None = None) -> list[Run]:
    """Every readable finished run under ``paths`` (directories with ``DONE``), in path order; an
    error if there is none (``inv``: the inventory of ``paths`` if already taken). With several
    folders, each run knows its folder's tag, and carries it in its label where :func:`mark_folders` says."""
    paths = path_list(paths)
    inv = inv if inv is not None else load_inventory(paths)
    if not inv.runs:
        raise ConfigError(", ".join(map(str, paths)), "no finished runs (directories with DONE) found"
                          + "".join(f"\n  {line}" for line in inv.left_out))
    return mark_folders(inv.runs, paths)


def _distinct_folders(paths) -> list[str]:
    """The given folders as absolute paths (not resolving links), each once, in the order given."""
    return list(dict.fromkeys(os.path.abspath(p) for p in path_list(paths)))


def folder_tags(paths) -> dict[str, str]:
    """``{absolute folder: tag}`` for the distinct given folders: each folder's shortest trailing part
    that no other given folder ends with (``runs/a/bench``, ``runs/b/bench`` → ``a/bench``, ``b/bench``;
    ``before``, ``after`` → themselves). Tags are distinct because the absolute paths are."""
    folders = _distinct_folders(paths)
    parts = {f: PurePath(f).parts for f in folders}
    tags = {}
    for f in folders:
        others = [parts[g] for g in folders if g != f]
        k = next(k for k in range(1, len(parts[f]) + 1) if all(o[-k:] != parts[f][-k:] for o in others))
        tags[f] = str(PurePath(*parts[f][-k:]))
    return tags


def _folder_of(run: Run, folders: list[str]) -> str:
    """The given folder a run was found under (the deepest, when given folders nest)."""
    where = os.path.abspath(run.path)
    inside = [f for f in folders if where == f or where.startswith(f.rstrip(os.sep) + os.sep)]
    return max(inside, key=len)


def mark_folders(runs: list[Run], paths) -> list[Run]:
    """``runs`` knowing their folder's tag (:func:`folder_tags`) when two or more folders are given.

    A (stream, label) of which two folders both hold one seed (in one task order) is a comparison, not
    one experiment: each of its runs (in every order) then carries its folder's tag in its label (``sft [before]``, ``sft [after]``), in
    every table, figure and ``numbers.json``. A label without such a shared seed keeps its name and its
    seeds are pooled as with one folder, so results that share nothing report exactly as before."""
    tags = folder_tags(paths)
    if len(tags) < 2:
        return runs
    folders = list(tags)
    runs = [replace(run, folder=tags[_folder_of(run, folders)]) for run in runs]
    seen: dict[tuple[str, str, str, int], set[str]] = {}
    for run in runs:
        seen.setdefault((run.stream, run.strategy_label, run.label, run.seed), set()).add(run.folder)
    # a shared seed in one task order tags the strategy's every order, so the orders table keeps them together
    shared = {(stream, strategy) for (stream, strategy, _, _), where in seen.items() if len(where) > 1}
    return [replace(run, tagged=True) if (run.stream, run.strategy_label) in shared else run for run in runs]


def _comparable(config: dict) -> dict:
    out = {k: v for k, v in config.items() if k not in PER_SEED_FIELDS}
    if "model" in out:  # runs stored before a real model's record left out the embedded model's fields
        out["model"] = model_record(out["model"])
    return out


def _first_difference(a: dict, b: dict, prefix: str = "") -> str:
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if va != vb:
            if isinstance(va, dict) and isinstance(vb, dict):
                return _first_difference(va, vb, f"{prefix}{key}.")
            return f"{prefix}{key}: {va!r} vs {vb!r}"
    return ""


def group_runs(runs: list[Run]) -> dict[tuple[str, str], list[Run]]:
    """``{(stream, label): runs sorted by seed}``, sorted by key; refuses groups that mix experiments."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.stream, run.label), []).append(run)
    for (stream, label), members in groups.items():
        members.sort(key=lambda r: r.seed)
        seeds = [r.seed for r in members]
        twice = next((s for s in seeds if seeds.count(s) > 1), None)
        if twice is not None:
            twins = [str(r.path) for r in members if r.seed == twice]
            raise ConfigError(twins[0], f"seed {twice} of {label!r} on {stream!r} is stored twice "
                              f"(also {twins[1]}); report one results directory per experiment")
        first = members[0]
        for other in members[1:]:
            diff = _first_difference(_comparable(first.config), _comparable(other.config))
            if diff:
                raise ConfigError(str(other.path / "config.json"),
                                  f"runs of {label!r} on {stream!r} differ in more than the seed ({diff}; "
                                  f"compare {first.path / 'config.json'}); give each variant its own label")
    fingerprints: dict[str, tuple[str, Path]] = {}
    for (stream, _), members in sorted(groups.items()):
        fp = members[0].config["stream"].get("fingerprint")
        seen = fingerprints.setdefault(stream, (fp, members[0].path))
        if seen[0] != fp:
            raise ConfigError(str(members[0].path / "config.json"), f"stream {stream!r} has fingerprint {fp}, "
                              f"but {seen[1]} used {seen[0]}: two different versions of one stream")
    return dict(sorted(groups.items()))


def seed_values(runs: list[Run], suite: str) -> dict[str, dict[int, float | None]]:
    """Every per-run number a table can show, as ``{key: {seed: value}}``.

    Keys: the metrics of ``suite`` (:data:`METRICS`), the cost fields (:data:`COST`), and
    ``final:<task>`` — the score on each task after the last one (the last row of R).
    """
    out: dict[str, dict[int, float | None]] = {}
    for run in runs:
        m = run.suite(suite)
        for key in METRICS:
            out.setdefault(key, {})[run.seed] = m.get(key)
        for key in COST:
            out.setdefault(key, {})[run.seed] = run.metrics.get("cost", {}).get(key)
        for task, value in zip(run.tasks, run.R(suite)[-1]):
            out.setdefault(f"final:{task}", {})[run.seed] = value
    return out


def loss_curve(run: Run) -> tuple[list[int], list[float]]:
    """Global step and training loss of every logged step of one run."""
    recs = sorted((r for r in run.log if "loss" in r and "global_step" in r), key=lambda r: r["global_step"])
    return [r["global_step"] for r in recs], [float(r["loss"]) for r in recs]


def task_step_ranges(run: Run) -> dict[int, tuple[int, int]]:
    """``{task index: (first global step, last global step)}`` for every trained task of one run."""
    ranges: dict[int, tuple[int, int]] = {}
    for r in run.log:
        t, g = r.get("task"), r.get("global_step")
        if t is None or g is None:
            continue
        lo, hi = ranges.get(t, (g, g))
        ranges[t] = (min(lo, g), max(hi, g))
    return dict(sorted(ranges.items()))


def runs_frame(paths, suite: str | None = None) -> pd.DataFrame:
    """Stored results as a pandas table, one row per finished run::

        from clbench.results.aggregate import runs_frame
        df = runs_frame("results/bench")                      # one folder, or a list of folders
        df.groupby("strategy")[["acc", "forgetting", "learning_acc"]].mean()

    Columns: experiment, stream, strategy (the label), order, strategy_name, seed, suite, the metrics of
    ``suite`` (default: each stream's primary suite; :data:`METRICS`), the cost fields (:data:`COST`) and
    the run directory (``path``). ``paths`` may be any level: results root, experiment, stream, run.
    Given several folders, a ``folder`` column (after ``experiment``) holds each run's folder tag, and a
    label that two folders both ran with one seed is ``<label> [<tag>]``, as in ``clbench report``."""
    paths = path_list(paths)
    several = len(_distinct_folders(paths)) > 1
    rows = []
    for run in load_runs(paths):
        cfg, met = run.config, run.metrics
        name = suite or met["primary_metric"]
        if name not in met["suites"]:
            continue
        m = met["suites"][name]
        rows.append({"experiment": cfg["experiment"], **({"folder": run.folder} if several else {}),
                     "stream": run.stream, "strategy": run.label,
                     "order": (cfg.get("order") or {}).get("name", "given"),
                     "strategy_name": cfg["strategy"]["name"], "seed": run.seed, "suite": name,
                     **{k: m.get(k) for k in METRICS}, **{k: met["cost"].get(k) for k in COST}, "path": str(run.path)})
    if not rows:
        raise ConfigError(", ".join(map(str, paths)), f"no finished runs with suite {suite!r}")
    return pd.DataFrame(rows).sort_values(["stream", "strategy", "seed"], kind="stable").reset_index(drop=True)
