"""The report's second interval: a hierarchical paired bootstrap over seeds and probe items.

With three seeds a Student t interval is wide (t = 4.30) and says nothing about how many probe items a
score rests on. The bootstrap here resamples both levels the numbers come from (Davison & Hinkley 1997,
§3.8, "multistage sampling"; the seed level is resampled first, so its variance is kept):

1. draw the seeds, with replacement, from the seeds the runs have;
2. for each drawn seed, draw the probe items of every task, with replacement (the same items for every
   row of R, for the base row and for the reference row: one item is one question asked after every
   task, so its rows stay paired);
3. rebuild every R cell from the drawn items (accuracy: the mean of ``correct``; perplexity:
   ``exp(Σ NLL / Σ tokens)`` over the drawn items, as :mod:`clbench.eval.probes` scores a suite), compute
   every metric with :func:`clbench.results.metrics.summarize`, and average over the drawn seeds.

:data:`REPLICATES` replicates give a percentile interval (2.5 %, 97.5 %). *Paired*: every strategy
with the same seeds is resampled with the same draws (seeds and item indices — the probe items are
the same on every seed, they come from the stream's generator seed), so the replicate-wise difference
from the reference strategy is the paired bootstrap of the difference; its interval is stored as
``diff_vs_reference``. A strategy whose seeds differ from the reference's gets its own draws and no
paired difference.

The records are the per-item files every run stores (``predictions/after_<t>/<task>.<suite>.jsonl``,
``predictions/base``, ``predictions/reference``; a pretrained task's row is the base row). Suites
scored by lm-eval, and runs without those files, get no bootstrap (``None``). Draws come from a
generator seeded by the stream, suite and seed list, so the same results give the same intervals.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from clbench.results.aggregate import METRICS, Run
from clbench.results.files import RunFiles, read_jsonl
from clbench.results.metrics import summarize

REPLICATES = 1000
LEVEL = 0.95
ITEM_KINDS = {"exact_match": "mean", "multiple_choice": "mean", "perplexity": "perplexity"}


@dataclass(frozen=True)
class SuiteItems:
    """One run's per-item values of one suite: ``rows[i][j]`` for R, ``base[j]``, ``reference[j]``.

    An entry is ``(n_j,)`` (``correct`` as 0/1) or ``(n_j, 2)`` (summed NLL, tokens) per item of task j,
    in the same item order everywhere, or ``None`` where task j has no such suite.
    """

    kind: str  # "mean" or "perplexity"
    rows: tuple[tuple[np.ndarray | None, ...], ...]
    base: tuple[np.ndarray | None, ...]
    reference: tuple[np.ndarray | None, ...]
    general: tuple[int, ...]
    higher_is_better: bool
    ids: tuple[tuple | None, ...] = ()  # item ids per task, in the order of the arrays


def _read_items(path, kind: str) -> tuple[list, np.ndarray] | None:
    if not path.exists():
        return None
    recs = read_jsonl(path)
    ids = [r["id"] for r in recs]
    if kind == "perplexity":
        return ids, np.array([[float(r["nll"]), float(r["tokens"])] for r in recs], dtype=np.float64)
    return ids, np.array([float(bool(r["correct"])) for r in recs], dtype=np.float64)


def load_suite_items(run: Run, suite: str) -> SuiteItems | None:
    """The per-item values behind ``run``'s matrix for ``suite``, or None when they cannot be had
    (lm-eval suite, missing files, or item lists that differ between rows)."""
    info = run.matrix["suites"][suite]
    kind = ITEM_KINDS.get(info.get("kind"))
    if kind is None:
        return None
    files = RunFiles(run.path)
    tasks = run.tasks
    pretrained = run.config["stream"].get("pretrained", [False] * len(tasks))
    R = info["R"]

    def row(key, present: list) -> tuple | None:
        out = []
        for j, task in enumerate(tasks):
            got = _read_items(files.prediction_file(key, task, suite), ITEM_KINDS[info["kind"]])
            if got is None and present[j] is not None:
                return None  # a score without its items
            out.append(got)
        return tuple(out)

    rows = [row("base" if pretrained[i] else i, R[i]) for i in range(len(R))]
    base = row("base", info["base"])
    reference = row("reference", info["reference"])
    if any(r is None for r in rows) or base is None or reference is None:
        return None
    for j in range(len(tasks)):  # one item order per task, in every row
        ids = {tuple(r[j][0]) for r in (*rows, base, reference) if r[j] is not None}
        if len(ids) > 1:
            return None

    def values(r):
        return tuple(None if x is None else x[1] for x in r)

    return SuiteItems(kind, tuple(values(r) for r in rows), values(base), values(reference),
                      tuple(i for i, p in enumerate(pretrained) if p), bool(info.get("higher_is_better", True)),
                      tuple(None if x is None else tuple(x[0]) for x in base))


def _cell(stacked: np.ndarray, seed_draw: np.ndarray, item_draw: np.ndarray, kind: str) -> np.ndarray:
    """Score of one (row, task) under every draw: ``stacked`` is (seeds, items[, 2]) → (B, k)."""
    picked = stacked[seed_draw[..., None], item_draw]  # (B, k, n[, 2])
    if kind == "perplexity":
        return np.exp(picked[..., 0].sum(-1) / picked[..., 1].sum(-1))
    return picked.mean(-1)


@dataclass(frozen=True)
class Draws:
    """Seed positions ``(B, k)`` and, per task, item indices ``(B, k, n_j)``."""

    seeds: np.ndarray
    items: dict[int, np.ndarray]


def make_draws(rng: np.random.Generator, n_seeds: int, n_items: Mapping[int, int], replicates: int) -> Draws:
    seeds = rng.integers(0, n_seeds, size=(replicates, n_seeds))
    return Draws(seeds, {j: rng.integers(0, n, size=(replicates, n_seeds, n)) for j, n in sorted(n_items.items())})


def replicate_metrics(per_seed: list[SuiteItems], draws: Draws, tasks: list[str]) -> dict[str, np.ndarray]:
    """Every metric of :func:`clbench.results.metrics.summarize` (and ``final:<task>``) under every draw,
    averaged over the drawn seeds: ``{key: (B,)}`` with NaN where a metric is undefined."""
    first = per_seed[0]
    T = len(first.rows)

    def stack(get) -> np.ndarray | None:
        arrays = [get(s) for s in per_seed]
        return None if arrays[0] is None else np.stack(arrays)

    def cells(get) -> list:
        out = []
        for j in range(T):
            stacked = stack(lambda s, j=j: get(s)[j])
            out.append(None if stacked is None else _cell(stacked, draws.seeds, draws.items[j], first.kind))
        return out

    R = [cells(lambda s, i=i: s.rows[i]) for i in range(T)]
    base = cells(lambda s: s.base)
    ref = cells(lambda s: s.reference)
    B, k = draws.seeds.shape
    keys = METRICS + [f"final:{t}" for t in tasks]
    out = {key: np.full((B, k), np.nan) for key in keys}

    def at(x, b, c):
        return None if x is None else float(x[b, c])

    for b in range(B):
        for c in range(k):
            m = summarize([[at(R[i][j], b, c) for j in range(T)] for i in range(T)], [at(x, b, c) for x in ref],
                          [at(x, b, c) for x in base], list(first.general), first.higher_is_better)
            for key in METRICS:
                if m.get(key) is not None:
                    out[key][b, c] = m[key]
            for j, task in enumerate(tasks):
                if m["final_per_task"][j] is not None:
                    out[f"final:{task}"][b, c] = m["final_per_task"][j]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": an undefined metric stays NaN
        return {key: np.nanmean(v, axis=1) for key, v in out.items()}


def _item_counts(per_seed: list[SuiteItems]) -> dict[int, int] | None:
    """Items per task, if every row of every seed has the same items (else None: no common draws)."""
    counts = {j: len(x) for j, x in enumerate(per_seed[0].base) if x is not None}
    if any(s.ids != per_seed[0].ids for s in per_seed):
        return None
    for s in per_seed:
        for row in (*s.rows, s.base, s.reference):
            if {j: len(x) for j, x in enumerate(row) if x is not None} != counts:
                return None
    return counts


def _interval(reps: np.ndarray, level: float = LEVEL) -> tuple[float, float] | None:
    if np.isnan(reps).any():
        return None
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(reps, [tail, 100 - tail])
    return float(lo), float(hi)


@dataclass(frozen=True)
class Replicates:
    """Every strategy's bootstrap replicates of every metric: ``values[label][key]`` is ``(B,)``; the
    strategies with the same ``seeds[label]`` share their draws, so their replicates are paired."""

    values: dict[str, dict[str, np.ndarray]]
    seeds: dict[str, tuple[int, ...]]
    tasks: tuple[str, ...]
    count: int

    def paired(self, a: str, b: str) -> bool:
        return a in self.values and b in self.values and self.seeds[a] == self.seeds[b]


def bootstrap_replicates(groups: Mapping[str, list[Run]], suite: str, stream: str = "",
                         replicates: int = REPLICATES) -> Replicates:
    """The replicates behind :func:`bootstrap_intervals` and the matched-learning comparison
    (:mod:`clbench.reporting.matched`), computed once per report: strategies without per-item files
    (lm-eval suites) or with other item counts than the first group of the same seeds are left out."""
    values: dict[str, dict[str, np.ndarray]] = {}
    seeds_of: dict[str, tuple[int, ...]] = {}
    draws: dict[tuple[int, ...], Draws] = {}
    tasks: list[str] = []
    for label, runs in groups.items():
        items = [load_suite_items(r, suite) for r in runs]
        tasks = runs[0].tasks
        if not items or any(i is None for i in items):
            continue
        seeds = tuple(r.seed for r in runs)
        counts = _item_counts(items)
        if counts is None:
            continue
        if seeds not in draws:
            rng = np.random.default_rng(zlib.crc32(f"{stream}|{suite}|{seeds}".encode()))
            draws[seeds] = make_draws(rng, len(seeds), counts, replicates)
        if {j: x.shape[2] for j, x in draws[seeds].items.items()} != counts:
            continue  # other item counts than the first group with these seeds: no common draws
        values[label] = replicate_metrics(items, draws[seeds], tasks)
        seeds_of[label] = seeds
    return Replicates(values, seeds_of, tuple(tasks), replicates)


def bootstrap_intervals(groups: Mapping[str, list[Run]], suite: str, reference: str = "sft", stream: str = "",
                        replicates: int = REPLICATES, reps: Replicates | None = None
                        ) -> dict[tuple[str, str], dict | None]:
    """``{(strategy label, metric key): {"low", "high", "replicates", "diff_vs_reference"} or None}``.

    ``diff_vs_reference`` is ``{"low", "high"}`` of the paired bootstrap of (strategy − reference), or
    None for the reference itself and for a strategy with other seeds than the reference's. ``reps``:
    the replicates if already drawn (:func:`bootstrap_replicates` with the same arguments).
    """
    reps = reps if reps is not None else bootstrap_replicates(groups, suite, stream, replicates)
    out: dict[tuple[str, str], dict | None] = {}
    for label in groups:
        for key in METRICS + [f"final:{t}" for t in reps.tasks]:
            mine = reps.values.get(label, {}).get(key)
            interval = None if mine is None else _interval(mine)
            if interval is None:
                out[(label, key)] = None
                continue
            diff = None
            if label != reference and reps.paired(label, reference):
                d = _interval(mine - reps.values[reference][key])
                diff = None if d is None else {"low": d[0], "high": d[1]}
            out[(label, key)] = {"low": interval[0], "high": interval[1], "replicates": reps.count,
                                 "level": LEVEL, "diff_vs_reference": diff}
    return out


def point_estimate(items: SuiteItems) -> dict:
    """``summarize`` of the full item sample of one run (equals the run's stored metrics)."""
    T = len(items.rows)
    every = {j: np.arange(len(x))[None, None, :] for j, x in enumerate(items.base) if x is not None}
    draws = Draws(np.zeros((1, 1), dtype=int), every)

    def score(x, j):
        return None if x is None else float(_cell(x[None], draws.seeds, draws.items[j], items.kind)[0, 0])

    R = [[score(items.rows[i][j], j) for j in range(T)] for i in range(T)]
    return summarize(R, [score(x, j) for j, x in enumerate(items.reference)],
                     [score(x, j) for j, x in enumerate(items.base)], list(items.general), items.higher_is_better)

