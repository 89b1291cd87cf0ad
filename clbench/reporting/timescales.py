"""The timescale sweep in the report: ΔF at matched learning against the slowest period P, per mechanism.

A run belongs to the sweep when its label is ``<mechanism>-P<period>`` for a mechanism of
``clbench.bench.timescales.MECHANISMS`` and its strategy is that mechanism's; P is read from the run's
stored options (the slowest of its tier periods, ``never`` = ∞), not from the label. The numbers are the
matched-learning comparisons (``clbench.reporting.matched``: ΔF = F − F_frontier(LA), hierarchical paired
bootstrap interval, Holm over the matched table's comparisons), so the figure, the table and the matched
table agree. A point whose LA lies outside the frontier's LA range has no ΔF: the table says on which
side, and the figure's upper panel shows it outside the frontier's band.

Figure: upper panel LA against P with the frontier's LA range as a grey band; lower panel ΔF with its
95% interval against P, zero dashed. P on a log axis; ∞ drawn as its own tick past a break.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from clbench.bench.timescales import MECHANISMS
from clbench.config.periods import NEVER
from clbench.reporting.matched import Matched, frontier_labels, verdict
from clbench.reporting.stats import mean_ci, significant
from clbench.reporting.tables import MARK, Cell, Table, fmt
from clbench.results.aggregate import Run


@dataclass(frozen=True)
class Point:
    mechanism: str
    label: str
    period: int | str  # the slowest tier's period (steps), or "never"
    periods: tuple  # every tier's
    learning_acc: float | None
    delta: float | None
    low: float | None
    high: float | None
    p_holm: float | None
    side: str | None  # "below" / "above" the frontier's LA range
    verdict: str


def sweep_point(label: str, config: Mapping) -> tuple[str, int | str, tuple] | None:
    """``(mechanism, P, periods)`` of a run in the sweep, else None."""
    strategy = config.get("strategy", {})
    for m in sorted(MECHANISMS, key=lambda m: -len(m.label)):  # layer_tiers-deep before layer_tiers
        if not label.startswith(f"{m.label}-P") or strategy.get("name") not in (m.strategy, *m.former):
            continue
        periods = tuple(strategy.get("options", {}).get(m.field, ()))
        if not periods:
            return None
        p = NEVER if NEVER in periods else max(periods)
        return m.label, p, periods
    return None


def frontier_range(groups: Mapping[str, list[Run]], suite: str, frontier: Sequence[str]) -> tuple[float, float] | None:
    las = [mean_ci(r.suite(suite).get("learning_acc") for r in groups[g]).mean for g in frontier if g in groups]
    las = [x for x in las if x is not None]
    return (min(las), max(las)) if len(las) >= 2 else None


def sweep_points(groups: Mapping[str, list[Run]], suite: str, comparisons: Sequence[Mapping]) -> list[Point]:
    """Every sweep run's point, by mechanism (in ``MECHANISMS`` order) and P (∞ last)."""
    forgetting = {c["strategy"]: c for c in comparisons if c["metric"] == "forgetting"}
    out = []
    for label, runs in groups.items():
        found = sweep_point(label, runs[0].config)
        if found is None:
            continue
        mechanism, p, periods = found
        c = forgetting.get(label)
        la = mean_ci(r.suite(suite).get("learning_acc") for r in runs).mean
        if c is None:  # a frontier row, or no comparison at all
            out.append(Point(mechanism, label, p, periods, la, None, None, None, None, None, "no comparison"))
            continue
        m = Matched(**c)
        out.append(Point(mechanism, label, p, periods, m.learning_acc, m.delta, m.low, m.high, m.p_holm, m.side,
                         verdict(m, False)))
    order = {m.label: i for i, m in enumerate(MECHANISMS)}
    return sorted(out, key=lambda pt: (order[pt.mechanism], _x_key(pt.period), pt.label))


def _x_key(p) -> float:
    return float("inf") if p == NEVER else float(p)


def p_text(p) -> str:
    return "∞" if p == NEVER else str(p)


def timescale_table(points: Sequence[Point], stream: str, suite: str, slug: str, reference: str,
                    front: Sequence[str], span: tuple[float, float] | None) -> Table | None:
    """One row per sweep point: P, its tiers' periods, LA, ΔF [95% interval] and the verdict."""
    if not points:
        return None
    rows = []
    for pt in points:
        if pt.delta is None:
            delta = {"below": "– (LA below the frontier)", "above": "– (LA above the frontier)"}.get(pt.side or "", "–")
        else:
            delta = fmt(pt.delta, 3) + ("" if pt.low is None else f" [{fmt(pt.low, 3)}, {fmt(pt.high, 3)}]")
            delta += MARK if significant(pt.p_holm) else ""
        periods = ", ".join(p_text(x) for x in pt.periods)
        rows.append((Cell(pt.mechanism), Cell(p_text(pt.period)), Cell(f"[{periods}]"),
                     Cell("–" if pt.learning_acc is None else fmt(pt.learning_acc, 3)), Cell(delta), Cell(pt.verdict)))
    missing = [pt.label for pt in points if pt.delta is None]
    span_text = "" if span is None else f"; LA {fmt(span[0], 3)}–{fmt(span[1], 3)}"
    caption = (f"ΔF at matched learning against the slowest tier's period P on {stream} ({suite}); "
               f"[95% bootstrap interval]; {MARK}: Holm-adjusted p < 0.05.")
    notes = (f"P in optimizer steps (∞: never updated); tiers [1, round(√P), P] on the global clock. ΔF = F − "
             f"F_frontier(LA): the frontier is {reference} at other learning rates ({', '.join(front)}{span_text}), "
             f"linear between them. [low, high]: 95% hierarchical paired bootstrap interval (seeds, then probe "
             f"items; the frontier rebuilt in every replicate); {MARK}: Holm-adjusted p < 0.05 over the "
             f"matched-learning table's comparisons. Negative ΔF: forgets less than {reference} learning as much."
             + (f" No comparison (LA outside the frontier's range): {', '.join(missing)}." if missing else ""))
    return Table("Timescales", f"tab:{slug}-timescales", caption,
                 ("Mechanism", "P", "Periods", "LA", "ΔF ↓ [95% interval]", "Verdict"), "lrlrll", tuple(rows),
                 [pt.__dict__ for pt in points], notes=notes)


def timescale_figure(points: Sequence[Point], span: tuple[float, float] | None, suite: str):
    """Upper: LA against P, the frontier's LA range shaded. Lower: ΔF [95% interval] against P."""
    from matplotlib.ticker import NullLocator

    from clbench.reporting.figures import WIDTH, _figure
    from clbench.reporting.looks import FAMILY_MARKERS, OKABE_ITO

    finite = sorted({pt.period for pt in points if pt.period != NEVER})
    top = max(finite, default=1)
    inf_x = top * 4.0  # ∞ drawn past a break, its own tick

    def x_of(p):
        return inf_x if p == NEVER else float(p)

    mechanisms = list(dict.fromkeys(pt.mechanism for pt in points))
    fig = _figure(WIDTH, 3.6 + 0.14 * len(mechanisms))
    upper, lower = fig.subplots(2, 1, sharex=True, height_ratios=[1, 1.4])
    if span is not None:
        upper.axhspan(span[0], span[1], color="#cccccc", alpha=0.5, linewidth=0, label="frontier's LA range")
    for k, mech in enumerate(mechanisms):
        mine = [pt for pt in points if pt.mechanism == mech]
        color = OKABE_ITO[1 + k % (len(OKABE_ITO) - 1)]
        marker = FAMILY_MARKERS["nested learning"][k % len(FAMILY_MARKERS["nested learning"])]
        xs = [x_of(pt.period) for pt in mine]
        las = [np.nan if pt.learning_acc is None else pt.learning_acc for pt in mine]
        upper.plot(xs, las, color=color, marker=marker, linewidth=1.0, label=mech)
        have = [pt for pt in mine if pt.delta is not None]
        if not have:
            continue
        x = np.array([x_of(pt.period) for pt in have])
        y = np.array([pt.delta for pt in have])
        lo = np.array([pt.delta - pt.low if pt.low is not None else 0.0 for pt in have])
        hi = np.array([pt.high - pt.delta if pt.high is not None else 0.0 for pt in have])
        jitter = 1.0 + 0.04 * (k - (len(mechanisms) - 1) / 2)  # side by side at each P (log axis: a factor)
        lower.errorbar(x * jitter, y, yerr=[lo, hi], color=color, marker=marker, linewidth=1.0, elinewidth=0.7,
                       markersize=3.5)
    lower.axhline(0.0, color="#555555", linewidth=0.7, linestyle="--")
    for ax in (upper, lower):
        ax.set_xscale("log")
        ticks = finite + [inf_x]
        ax.set_xticks(ticks, [str(p) for p in finite] + ["∞"])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.axvspan(top * 1.6, top * 2.5, color="white", zorder=3)  # the break before ∞
    upper.set_ylabel(f"LA ({suite})")
    lower.set_ylabel("ΔF at matched LA ↓")
    lower.set_xlabel("slowest tier's period P (optimizer steps)")
    fig.legend(*upper.get_legend_handles_labels(), loc="outside lower center", ncol=min(3, len(mechanisms) + 1),
               fontsize=6)
    return fig


def timescale_report(groups: Mapping[str, list[Run]], suite: str, reference: str, matched_numbers: Mapping,
                     stream: str, slug: str):
    """``(points, table or None, frontier LA range)`` of one stream's runs."""
    front = list(matched_numbers.get("frontier") or frontier_labels(groups, reference))
    points = sweep_points(groups, suite, matched_numbers.get("comparisons", []))
    span = frontier_range(groups, suite, front)
    return points, timescale_table(points, stream, suite, slug, reference, front, span), span


def write_timescale_figure(out_dir, prefix: str, points: Sequence[Point], span, suite: str):
    """Draw and save the figure when some mechanism has two or more points; returns its ``FigureFile``."""
    import matplotlib

    from clbench.reporting.figures import STYLE, FigureFile, save

    by = {}
    for pt in points:
        by.setdefault(pt.mechanism, set()).add(pt.period)
    if not any(len(ps) >= 2 for ps in by.values()):
        return None
    with matplotlib.rc_context(STYLE):
        fig = timescale_figure(points, span, suite)
        stem = f"{prefix}/timescales"
        save(fig, out_dir, stem)
    missing = [pt.label for pt in points if pt.delta is None]
    caption = (f"Upper: learning accuracy LA ({suite}, seed mean) of each sweep point against the slowest tier's "
               f"period P (log axis; ∞: never updated); grey band: the LA range of the matched-learning frontier. "
               f"Lower: ΔF = F − F_frontier(LA) with its 95% hierarchical paired bootstrap interval, for the points "
               f"inside that range (mechanisms drawn side by side at each P); below zero: forgets less than the "
               f"reference learning as much."
               + (f" Outside the frontier's range (no ΔF): {', '.join(missing)}." if missing else ""))
    return FigureFile(stem, "Timescales", caption)
