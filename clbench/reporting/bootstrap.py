"""The report's second interval: a bootstrap over seeds and probe items, and its paired differences.

With three seeds a Student t interval is wide (t = 4.30) and says nothing about how many probe items a
score rests on. The bootstrap here resamples both sources of the numbers' variation, the seeds and the
probe items. The two are *crossed*, not nested: every seed answers the same probe items (they come from
the stream's generator seed), so an item that is hard is hard on every seed. One replicate:

1. draw the seeds, with replacement, from the seeds the runs have;
2. draw the probe items of every task, with replacement (the same items for every row of R, for the base
   row and for the reference row: one item is one question asked after every task, so its rows stay
   paired) — either once for the replicate, shared by every drawn seed, or once for each drawn seed
   (below);
3. rebuild every R cell from the drawn items (accuracy: the mean of ``correct``; perplexity:
   ``exp(Σ NLL / Σ tokens)`` over the drawn items, as :mod:`clbench.eval.probes` scores a suite), compute
   every metric with :func:`clbench.results.metrics.summarize`, and average over the drawn seeds.

:data:`REPLICATES` replicates give a percentile interval (2.5 %, 97.5 %). Which item draw, measured on
synthetic experiments with a known truth (``clbench coverage``, ``clbench/bench/coverage.py``;
docs/measurement.md has the numbers):

* **A strategy's own value** (``low``/``high`` in ``numbers.json``): items drawn once per replicate for all
  drawn seeds (Owen 2007's pigeonhole bootstrap for crossed designs). An item's difficulty is shared by
  the seeds, so its sampling variance does not shrink with more seeds; drawn afresh for each seed it did,
  and these intervals covered the true value only 82–90% of the time (95% drawn once).
* **A difference** — from the reference (``diff_vs_reference``) and at matched learning
  (:mod:`clbench.reporting.matched`): items drawn for each drawn seed (Davison & Hinkley 1997, §3.8,
  multistage sampling). Item difficulty mostly cancels in a paired difference and what is left varies from
  seed to seed; drawn once per replicate, that seed-by-item variation is counted twice (Owen 2007), and
  the matched-learning intervals covered 96–100% (per seed: close to 95%).

*Paired*: every strategy with the same seeds is resampled with the same draws (seeds and item indices),
so the replicate-wise difference from the reference strategy is the paired bootstrap of the difference.
A strategy whose seeds differ from the reference's gets its own draws and no paired difference.

The hierarchical resampling, and the frontier rebuilt in every replicate of the matched comparison, have no
library implementation (``scipy.stats.bootstrap`` resamples one level of independent observations; with one
seed this is that bootstrap, and ``tests/test_report_bootstrap.py`` checks it against scipy's); the
percentiles are numpy's.

The records are the per-item files every run stores (``predictions/after_<t>/<task>.<suite>.jsonl``,
``predictions/base``, ``predictions/reference``; a pretrained task's row is the base row). Suites
scored by lm-eval, and runs without those files, get no bootstrap (``None``). Draws come from a
generator seeded by the stream, suite, seed list and draw scheme, so the same results give the same
intervals.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from clbench.data.probe_kinds import PROBE_KINDS
from clbench.results.aggregate import METRICS, Run
from clbench.results.files import RunFiles, read_jsonl
from clbench.results.metrics import summarize

REPLICATES = 1000
LEVEL = 0.95
# the kinds with per-item records, and how the items make the score (clbench.data.probe_kinds)
ITEM_KINDS = {k: p.aggregation for k, p in PROBE_KINDS.items() if p.aggregation}


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
    pretrained = run.pretrained
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


def make_draws(rng: np.random.Generator, n_seeds: int, n_items: Mapping[int, int], replicates: int,
               shared_items: bool = False) -> Draws:
    """``replicates`` draws of the seeds and, per task, of its items: for each drawn seed its own (the
    paired differences' scheme), or one item draw per replicate shared by every drawn seed
    (``shared_items``: a strategy's own value; module docstring)."""
    seeds = rng.integers(0, n_seeds, size=(replicates, n_seeds))
    if shared_items:
        return Draws(seeds, {j: np.broadcast_to(rng.integers(0, n, size=(replicates, 1, n)), (replicates, n_seeds, n))
                             for j, n in sorted(n_items.items())})
    return Draws(seeds, {j: rng.integers(0, n, size=(replicates, n_seeds, n)) for j, n in sorted(n_items.items())})


def replicate_metrics(per_seed: list[SuiteItems], draws: Draws, tasks: list[str]) -> dict[str, np.ndarray]:
    """Every metric of :func:`clbench.results.metrics.summarize` (and ``final:<task>``) under every draw,
    averaged over the drawn seeds: ``{key: (B,)}`` with NaN where a metric is undefined.

    ``summarize`` runs once, on cells that are ``(B, k)`` arrays (every replicate and drawn seed at once;
    it computes elementwise what it computes for one matrix of numbers, bitwise the same)."""
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
    m = summarize(R, cells(lambda s: s.reference), cells(lambda s: s.base), list(first.general),
                  first.higher_is_better)
    undefined = np.full(draws.seeds.shape, np.nan)
    per_draw = {key: undefined if m.get(key) is None else m[key] for key in METRICS}
    per_draw.update({f"final:{task}": undefined if m["final_per_task"][j] is None else m["final_per_task"][j]
                     for j, task in enumerate(tasks)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": an undefined metric stays NaN
        return {key: np.nanmean(v, axis=1) for key, v in per_draw.items()}


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
    shared_items: bool = False  # one item draw per replicate for every drawn seed (make_draws)

    def paired(self, a: str, b: str) -> bool:
        return a in self.values and b in self.values and self.seeds[a] == self.seeds[b]


GroupItems = dict[str, tuple[tuple[int, ...], list[SuiteItems]]]  # label -> (seeds, one SuiteItems per seed)


def group_items(groups: Mapping[str, list[Run]], suite: str) -> tuple[GroupItems, list[str]]:
    """Every strategy's per-item values (strategies without per-item files, e.g. lm-eval suites, are left
    out) and the stream's tasks."""
    found: GroupItems = {}
    tasks: list[str] = []
    for label, runs in groups.items():
        items = [load_suite_items(r, suite) for r in runs]
        tasks = runs[0].tasks
        if items and all(i is not None for i in items):
            found[label] = (tuple(r.seed for r in runs), items)
    return found, tasks


def bootstrap_replicates(groups: Mapping[str, list[Run]], suite: str, stream: str = "",
                         replicates: int = REPLICATES, shared_items: bool = False) -> Replicates:
    """The replicates behind :func:`bootstrap_intervals` and the matched-learning comparison
    (:mod:`clbench.reporting.matched`): strategies without per-item files (lm-eval suites) or with other
    item counts than the first group of the same seeds are left out."""
    found, tasks = group_items(groups, suite)
    return replicates_from_items(found, tasks, f"{stream}|{suite}", replicates, shared_items)


def replicates_from_items(items: GroupItems, tasks: list[str], key: str, replicates: int = REPLICATES,
                          shared_items: bool = False) -> Replicates:
    """:func:`bootstrap_replicates` from per-item values already in memory: ``items[label]`` is ``(seeds,
    one SuiteItems per seed)``. Strategies with the same seeds share their draws, from a generator seeded
    by ``key`` and the seeds (the report's key is ``"<stream>|<suite>"``); a strategy whose seeds' item
    lists differ, or whose item counts differ from the first strategy with the same seeds, is left out.
    ``shared_items``: one item draw per replicate for all drawn seeds (:func:`make_draws`)."""
    values: dict[str, dict[str, np.ndarray]] = {}
    seeds_of: dict[str, tuple[int, ...]] = {}
    draws: dict[tuple[int, ...], Draws] = {}
    for label, (seeds, per_seed) in items.items():
        counts = _item_counts(per_seed)
        if counts is None:
            continue
        if seeds not in draws:
            rng = np.random.default_rng(zlib.crc32(f"{key}|{seeds}{'|shared' if shared_items else ''}".encode()))
            draws[seeds] = make_draws(rng, len(seeds), counts, replicates, shared_items)
        if {j: x.shape[2] for j, x in draws[seeds].items.items()} != counts:
            continue  # other item counts than the first group with these seeds: no common draws
        values[label] = replicate_metrics(per_seed, draws[seeds], tasks)
        seeds_of[label] = seeds
    return Replicates(values, seeds_of, tuple(tasks), replicates, shared_items)


def bootstrap_intervals(groups: Mapping[str, list[Run]], suite: str, reference: str = "sft", stream: str = "",
                        replicates: int = REPLICATES, reps: Replicates | None = None, own: Replicates | None = None
                        ) -> dict[tuple[str, str], dict | None]:
    """``{(strategy label, metric key): {"low", "high", "replicates", "diff_vs_reference"} or None}``.

    ``low``, ``high``: the strategy's own value, from draws with items shared by the drawn seeds (``own``);
    ``diff_vs_reference``: ``{"low", "high"}`` of the paired bootstrap of (strategy − reference), from draws
    with items per drawn seed (``reps``) — the module docstring says why two — or None for the reference
    itself and for a strategy with other seeds than the reference's. ``reps``, ``own``: the replicates if
    already drawn (:func:`bootstrap_replicates` with the same arguments, ``shared_items`` False and True).
    """
    if reps is None or own is None:
        found, tasks = group_items(groups, suite)
        reps = reps or replicates_from_items(found, tasks, f"{stream}|{suite}", replicates)
        own = own or replicates_from_items(found, tasks, f"{stream}|{suite}", replicates, shared_items=True)
    out: dict[tuple[str, str], dict | None] = {}
    for label in groups:
        for key in METRICS + [f"final:{t}" for t in reps.tasks]:
            values = own.values.get(label, {}).get(key)
            mine = reps.values.get(label, {}).get(key)
            interval = None if values is None else _interval(values)
            if interval is None:
                out[(label, key)] = None
                continue
            diff = None
            if label != reference and reps.paired(label, reference):
                d = _interval(mine - reps.values[reference][key])
                diff = None if d is None else {"low": d[0], "high": d[1]}
            out[(label, key)] = {"low": interval[0], "high": interval[1], "replicates": own.count,
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

