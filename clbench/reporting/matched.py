"""Forgetting at matched learning: every strategy against the reference trained at other learning rates.

A method that learns less also forgets less (Biderman et al. 2024, "LoRA learns less and forgets
less"), so "forgets less than sft" means nothing until learning is held equal. The report holds it
equal with a *frontier*: the reference strategy (``sft``) run at several learning rates — the grid
rows whose resolved configuration differs from the reference row's in ``train.lr`` only (and in their
label) — traces how much plain fine-tuning forgets for how much it learns. Ordered by learning rate,
the frontier ends where a higher rate stops buying learning: a row whose LA is below that of a row at
a lower rate has broken training (on SmolLM2, sft at 5e-3 broke down on one seed, final loss 5.2, and
learned less on all), not traded learning for forgetting, so it and every faster row are left out and
named in the caption. A strategy with learning accuracy LA and forgetting F is compared with the
frontier at the same LA:

    ΔF = F − F_frontier(LA),     F_frontier = piecewise-linear through the frontier rows' (LA, F),

and likewise Δ retention of the pretrained task (``general_retention``, higher is better). ΔF < 0:
the strategy forgets less than sft does *when sft learns as much*; ΔF ≈ 0: what it saves is what it
did not learn. A strategy whose LA lies outside the frontier's LA range gets no number (an
extrapolated frontier would be a guess): the table says on which side it lies.

Interval and test: the hierarchical paired bootstrap of :mod:`clbench.reporting.bootstrap` (seeds, then
probe items; the same draws for every strategy with the same seeds). In each replicate the frontier
is rebuilt from the replicate's frontier rows and the strategy's ΔF recomputed, so the interval carries
the frontier's own uncertainty. A replicate whose LA falls outside that replicate's frontier has no ΔF
(extrapolating a steep end segment gave retention changes beyond ±1 on the default benchmark); when
fewer than :data:`MIN_IN_RANGE` of the replicates have one, the frontier does not pin the comparison
down and the table says so instead of giving an interval. Otherwise the percentile interval of the
replicates that have one is shown; the two-sided bootstrap p-value ``2·min(P(Δ ≤ 0), P(Δ ≥ 0))`` over
them is Holm–Bonferroni-adjusted over every comparison in the table, and ``†`` marks adjusted
p < 0.05. Without per-item files (lm-eval suites) the table has point values only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from clbench.reporting.bootstrap import LEVEL, Replicates
from clbench.reporting.stats import holm, mean_ci, significant
from clbench.reporting.tables import MARK, Cell, Table, fmt, order_labels
from clbench.results.aggregate import PER_SEED_FIELDS, Run

# (metric, header, higher is better): what is compared at matched learning accuracy
MATCHED = (("forgetting", "ΔF ↓", False), ("general_retention", "Δ retention ↑", True))
VARIED = ("train.lr",)  # the fields a frontier row may change (besides its label)
MIN_IN_RANGE = 0.9  # share of bootstrap replicates whose LA the replicate's frontier must bracket


def _strip(config: dict) -> dict:
    out = {k: v for k, v in config.items() if k not in PER_SEED_FIELDS}
    out["strategy"] = {k: v for k, v in out.get("strategy", {}).items() if k != "label"}
    out["train"] = {k: v for k, v in out.get("train", {}).items() if f"train.{k}" not in VARIED}
    return out


def frontier_labels(groups: Mapping[str, list[Run]], reference: str) -> list[str]:
    """The reference label and every label whose runs differ from it only in :data:`VARIED`; when the
    reference is one folder's row of a comparison (``sft [before]``, ``clbench.results.aggregate.mark_folders``),
    only that folder's labels: the other folder's ``sft`` is compared with the frontier, not part of it."""
    if reference not in groups:
        return []
    first = groups[reference][0]
    ref = _strip(first.config)
    return [lab for lab, runs in groups.items() if lab == reference or (
        _strip(runs[0].config) == ref and (not first.tagged or runs[0].folder == first.folder))]


def efficient_frontier(groups: Mapping[str, list[Run]], suite: str, labels: Sequence[str]
                       ) -> tuple[list[str], list[str]]:
    """``(kept, dropped)``: ``labels`` by learning rate, cut before the first row that learns less than
    the row before it (mean LA over seeds); rows with an undefined LA are dropped too."""
    by_lr = sorted(labels, key=lambda g: (groups[g][0].config["train"]["lr"], g))
    kept: list[str] = []
    for i, g in enumerate(by_lr):
        la = _means(groups, suite, g, "learning_acc")
        if la is None or (kept and la < _means(groups, suite, kept[-1], "learning_acc")):
            return kept, by_lr[i:]
        kept.append(g)
    return kept, []


def frontier_at(la: Sequence[float], f: Sequence[float], x: float) -> float | None:
    """The piecewise-linear curve through the points ``(la[i], f[i])`` at ``x`` (points of equal LA are
    averaged; points with a missing or non-finite value are left out); None outside the points' LA range
    or with fewer than two distinct LA values (:func:`frontier_curve` for one point set)."""
    if x is None:
        return None
    column = frontier_curve(np.array([[np.nan if a is None else a] for a in la], dtype=float),
                            np.array([[np.nan if b is None else b] for b in f], dtype=float),
                            np.array([x], dtype=float))
    return None if np.isnan(column[0]) else float(column[0])


def frontier_curve(la: np.ndarray, f: np.ndarray, x: np.ndarray) -> np.ndarray:
    """:func:`frontier_at` for many point sets at once: column ``b`` of ``la`` and ``f`` (points × sets)
    is one frontier, evaluated at ``x[b]``; NaN where it has no value. The bootstrap rebuilds the frontier
    in every replicate, so this is one pass over all of them.

    Between two distinct LA values ``x0 < x1`` it is ``slope·(x − x0) + y0`` with ``slope = (y1 − y0) /
    (x1 − x0)``, and ``y0`` at ``x = x0``: the arithmetic of ``numpy.interp`` (which needs one sorted point
    set per call), so a frontier gives the same number whichever of the two computes it."""
    la, f, x = np.asarray(la, dtype=float), np.asarray(f, dtype=float), np.asarray(x, dtype=float)
    ok = np.isfinite(la) & np.isfinite(f)
    total, count, first = np.zeros(la.shape), np.zeros(la.shape), ok.copy()
    for q in range(la.shape[0]):  # equal LA: the mean of their F, summed in the points' order
        same = ok & ok[q] & (la == la[q])
        total = total + np.where(same, f[q], 0.0)
        count = count + same
        first[q + 1:] &= ~same[q + 1:]  # a later point of an LA seen before is not a new LA value
    order = np.argsort(np.where(ok, la, np.inf), axis=0, kind="stable")
    xs = np.take_along_axis(np.where(ok, la, np.inf), order, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ys = np.take_along_axis(total / count, order, 0)
    last = ok.sum(0) - 1  # sorted position of the highest LA
    j = np.clip((xs <= x).sum(0) - 1, 0, None)
    k = np.minimum(j + 1, np.maximum(last, 0))
    x0, y0 = np.take_along_axis(xs, j[None], 0)[0], np.take_along_axis(ys, j[None], 0)[0]
    x1, y1 = np.take_along_axis(xs, k[None], 0)[0], np.take_along_axis(ys, k[None], 0)[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (y1 - y0) / (x1 - x0)
        inside = (first.sum(0) >= 2) & np.isfinite(x) & (xs[0] <= x) & (x <= np.take_along_axis(xs, np.maximum(last, 0)[None], 0)[0])
        return np.where(inside, np.where(x == x0, y0, slope * (x - x0) + y0), np.nan)


@dataclass(frozen=True)
class Matched:
    """One strategy's comparison for one metric."""

    strategy: str
    metric: str
    learning_acc: float | None
    value: float | None
    frontier_value: float | None  # the frontier at the strategy's LA (None: outside its range)
    delta: float | None
    low: float | None = None
    high: float | None = None
    p: float | None = None
    p_holm: float | None = None
    side: str | None = None  # "below" / "above" the frontier's LA range, when outside it
    in_range: float | None = None  # share of bootstrap replicates inside their frontier's LA range


def _means(groups: Mapping[str, list[Run]], suite: str, label: str, key: str) -> float | None:
    return mean_ci(run.suite(suite).get(key) for run in groups[label]).mean


def _boot_delta(reps: Replicates, front: list[str], label: str, key: str) -> np.ndarray | None:
    """The strategy's ``key`` minus the frontier rebuilt from the same replicate, per replicate (NaN where
    the replicate's frontier does not bracket the replicate's LA); None without paired replicates."""
    if label not in reps.values or any(not reps.paired(label, g) for g in front):
        return None
    la = np.stack([reps.values[g]["learning_acc"] for g in front])  # (frontier rows, B)
    y = np.stack([reps.values[g][key] for g in front])
    return reps.values[label][key] - frontier_curve(la, y, reps.values[label]["learning_acc"])


def matched_comparisons(groups: Mapping[str, list[Run]], suite: str, reference: str,
                        reps: Replicates | None) -> tuple[list[str], list[str], list[Matched]]:
    """``(frontier labels, labels cut from it, comparisons)``: every non-frontier strategy × :data:`MATCHED`
    metric (rows cut from the frontier by :func:`efficient_frontier` are compared like any other)."""
    front, dropped = efficient_frontier(groups, suite, frontier_labels(groups, reference))
    if len(front) < 2:
        return front, dropped, []
    out = []
    front_la = [_means(groups, suite, g, "learning_acc") for g in front]
    front_y = {key: [_means(groups, suite, g, key) for g in front] for key, _, _ in MATCHED}
    lo, hi = min(x for x in front_la if x is not None), max(x for x in front_la if x is not None)
    for label in order_labels(groups, reference):
        if label in front:
            continue
        la = _means(groups, suite, label, "learning_acc")
        for key, _, _ in MATCHED:
            value = _means(groups, suite, label, key)
            at = None if la is None else frontier_at(front_la, front_y[key], la)
            if la is None or value is None or at is None:
                side = None if la is None else ("below" if la < lo else "above" if la > hi else None)
                out.append(Matched(label, key, la, value, None, None, side=side))
                continue
            delta = value - at
            boot = None if reps is None else _boot_delta(reps, front, label, key)
            share = None if boot is None else float(np.mean(~np.isnan(boot)))
            if boot is None or share < MIN_IN_RANGE:
                out.append(Matched(label, key, la, value, at, delta, in_range=share))
                continue
            boot = boot[~np.isnan(boot)]
            tail = (1 - LEVEL) / 2 * 100
            low, high = (float(v) for v in np.percentile(boot, [tail, 100 - tail]))
            p = min(1.0, 2 * min(float(np.mean(boot <= 0)), float(np.mean(boot >= 0))))
            out.append(Matched(label, key, la, value, at, delta, low, high, p, in_range=share))
    adjusted = holm([m.p for m in out])
    return front, dropped, [Matched(**{**m.__dict__, "p_holm": a}) for m, a in zip(out, adjusted)]


def verdict(m: Matched, higher_is_better: bool) -> str:
    """A plain-words reading of one comparison (what the README's verdict quotes)."""
    if m.delta is None:
        return {"below": "learns less than any frontier row: not comparable",
                "above": "learns more than any frontier row: not comparable"}.get(m.side or "", "no value")
    if m.in_range is not None and m.in_range < MIN_IN_RANGE:
        return f"frontier too uncertain at this LA ({m.in_range:.0%} of replicates inside it)"
    if m.p_holm is None:
        return "no interval"
    if not significant(m.p_holm):
        return "no detectable difference"
    better = (m.delta > 0) == higher_is_better
    return "better than sft at matched learning" if better else "worse than sft at matched learning"


def matched_table(groups: Mapping[str, list[Run]], suite: str, reference: str, reps: Replicates | None,
                  stream: str, slug: str) -> tuple[Table | None, dict]:
    """The table and its numbers (``numbers.json`` → ``matched``); no table without a frontier."""
    front, dropped, comps = matched_comparisons(groups, suite, reference, reps)
    numbers = {"frontier": front, "left_out_of_frontier": dropped, "definition": "delta = value - frontier(learning_acc), frontier = "
               "piecewise-linear through the frontier rows' seed means", "comparisons": [m.__dict__ for m in comps]}
    if not comps:
        return None, numbers
    by = {(m.strategy, m.metric): m for m in comps}
    rows = []
    for label in dict.fromkeys(m.strategy for m in comps):
        first = by[(label, MATCHED[0][0])]
        cells = [Cell(label), Cell("–" if first.learning_acc is None else fmt(first.learning_acc, 3))]
        for key, _, hib in MATCHED:
            m = by[(label, key)]
            if m.delta is None:
                cells.append(Cell("–"))
            else:
                text = fmt(m.delta, 3) + ("" if m.low is None else f" [{fmt(m.low, 3)}, {fmt(m.high, 3)}]")
                cells.append(Cell(text + (MARK if significant(m.p_holm) else "")))
        cells.append(Cell(verdict(first, False)))
        rows.append(tuple(cells))
    points = "; ".join(f"{g} (LA {fmt(_means(groups, suite, g, 'learning_acc'), 3)}, F "
                       f"{fmt(_means(groups, suite, g, 'forgetting'), 3)}, lr {groups[g][0].config['train']['lr']})"
                       for g in sorted(front, key=lambda g: _means(groups, suite, g, "learning_acc") or 0))
    m_count = sum(m.p is not None for m in comps)
    caption = (f"Forgetting at matched learning on {stream} ({suite}): ΔF = F − F of {reference} at the same LA, "
               f"[95% bootstrap CI]; {MARK}: Holm-adjusted p < 0.05; –: LA outside the frontier.")
    notes = (f"Forgetting at matched learning on stream {stream}, suite {suite}: each strategy against "
               f"{reference} trained at other learning rates (the frontier: {points}"
               + (f"; left out, as a higher rate learned less than a lower one: {', '.join(dropped)}" if dropped else "")
               + f"). ΔF = F − F_frontier(LA), "
               f"the frontier linear between its rows' seed means; Δ retention likewise for the pretrained "
               f"task's retention. Negative ΔF: forgets less than {reference} does when it learns as much. "
               f"[low, high]: 95% hierarchical paired bootstrap interval (seeds, then probe items; the frontier "
               f"rebuilt in every replicate, over the replicates whose LA it brackets; none where fewer than "
               f"{MIN_IN_RANGE:.0%} do). {MARK}: Holm–Bonferroni-adjusted bootstrap p < 0.05 over the "
               f"{m_count} comparisons in this table. –: the strategy's LA lies outside the frontier's range "
               f"(no extrapolation). Verdict: on ΔF.")
    headers = ("Strategy", "LA", *(h for _, h, _ in MATCHED), "Verdict (forgetting)")
    return Table("Matched learning", f"tab:{slug}-matched", caption, headers, "lr" + "r" * len(MATCHED) + "X",
                 tuple(rows), numbers["comparisons"], notes), numbers
