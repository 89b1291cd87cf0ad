"""Publication figures from stored runs: one paper style, each figure as PDF (vector) and PNG.

Style: one-column width (3.4 in), 7–8 pt text, one look per strategy label from
:mod:`clbench.reporting.looks` (Okabe–Ito colours, colour-blind safe; markers and line style by family,
so a grey print stays readable; every label a distinct colour and marker pair, the same in every
figure and report); legends sit below the panels, never over the data, with as many columns as fit;
heatmaps use cividis (perceptually uniform, colour-blind safe). Figures are drawn with
matplotlib's object API (``Figure``, never pyplot), so building a report changes no global state.
PDF metadata carries no date, so the same results give the same files.

Every band and error bar is the 95% Student t interval over seeds (:mod:`clbench.reporting.stats`),
clipped to the range the metric can take (:func:`metric_range`: [0, 1] for an accuracy and its
learning accuracy, [−1, 1] for its forgetting, ≥ 0 for a loss, a time or a count). With two or three
seeds a t interval is wide (t = 12.7 with two) and would otherwise claim an LA above 1; the clipped
end is where the metric stops, and every caption says the intervals are clipped.

The tier figure reads strategies' tier diagnostics through :mod:`clbench.reporting.tier_data`
(its docstring gives the shape it expects).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clbench.paths import inside
from clbench.reporting.looks import OKABE_ITO, Look, looks, run_family
from clbench.reporting.stats import CONFIDENCE, Estimate, t_quantile
from clbench.reporting.tables import order_labels
from clbench.reporting.tier_data import tier_data
from clbench.results.aggregate import Run, loss_curve, task_step_ranges
from clbench.results.files import safe_label

WIDTH = 3.4  # inches: one column of a two-column paper
LINESTYLES = ["-", "--", "-.", ":"]
STYLE = {
    "font.family": "DejaVu Sans", "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "legend.fontsize": 7, "lines.linewidth": 1.2,
    "lines.markersize": 4, "axes.linewidth": 0.6, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.linewidth": 0.4, "grid.alpha": 0.4, "legend.frameon": False,
    "pdf.fonttype": 42, "ps.fonttype": 42, "svg.hashsalt": "clbench", "savefig.dpi": 200,
    "figure.dpi": 100, "errorbar.capsize": 2, "image.cmap": "cividis",
}
PDF_METADATA = {"Creator": "clbench report", "Producer": None, "CreationDate": None, "ModDate": None}


@dataclass(frozen=True)
class FigureFile:
    stem: str  # path without extension, relative to the report folder
    title: str
    caption: str


def _figure(width: float, height: float):
    """A figure on its own Agg canvas (no pyplot state), so a legend can be measured before saving."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig, out_dir: Path, stem: str) -> list[Path]:
    """``stem.pdf`` and ``stem.png`` under ``out_dir`` (no dates inside: reproducible bytes)."""
    paths = []
    for ext, meta in (("pdf", PDF_METADATA), ("png", None)):
        *folders, name = stem.split("/")
        path = inside(out_dir, *folders, f"{name}.{ext}")
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format=ext, metadata=meta)
        paths.append(path)
    return paths


def _stack(rows: Sequence[Sequence[float | None]]) -> np.ndarray:
    return np.array([[np.nan if v is None else float(v) for v in r] for r in rows], dtype=float)


def _band(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Seed mean and t half-width along axis 0 (``None`` with one seed)."""
    mean = arr.mean(axis=0)
    n = arr.shape[0]
    if n < 2:
        return mean, None
    return mean, t_quantile(CONFIDENCE, n - 1) * arr.std(axis=0, ddof=1) / math.sqrt(n)


Range = tuple[float, float]
UNBOUNDED: Range = (-math.inf, math.inf)
NONNEGATIVE: Range = (0.0, math.inf)


def metric_range(metric: str, unit: bool) -> Range:
    """The values ``metric`` can take: for a score in [0, 1] (``unit``), the scores themselves (ACC, LA,
    R cells) lie in [0, 1] and differences of two scores (forgetting, BWT) in [−1, 1]; otherwise (a
    perplexity) nothing is assumed. Costs are never negative."""
    if metric in ("train_seconds", "updated_elements", "tokens", "loss"):
        return NONNEGATIVE
    if not unit:
        return UNBOUNDED
    return (-1.0, 1.0) if metric in ("forgetting", "bwt", "general_retention", "fwt", "fwt_base") else (0.0, 1.0)


def clipped(mean, half_width, bounds: Range):
    """``(low, high)`` of mean ± half_width, each end clipped to ``bounds`` (arrays or floats)."""
    lo, hi = bounds
    return np.clip(np.asarray(mean) - half_width, lo, hi), np.clip(np.asarray(mean) + half_width, lo, hi)


def _legend_height(looks_: Mapping[str, Look], labels) -> float:
    """Inches the legend below the panels takes: one line per entry of its longest family column."""
    fams = [looks_[lab].family for lab in labels if lab in looks_]
    return 0.15 + 0.14 * max((fams.count(f) for f in set(fams)), default=0)


def _legend(fig, looks_: Mapping[str, Look], labels: Sequence[str], markers: bool = True) -> None:
    """One legend below the panels (never over the data): a column per family when that fits the
    figure's width, else as many columns as fit (so no entry is clipped at the edges)."""
    from matplotlib.lines import Line2D

    labels = [lab for lab in looks_ if lab in labels]  # family order

    def handle(lab):
        if lab is None:  # an empty cell that keeps the next family in its own column
            return Line2D([], [], linestyle="none", marker=None)
        lk = looks_[lab]
        return Line2D([], [], color=lk.color, marker=lk.marker if markers else None, linestyle=lk.linestyle)

    families = list(dict.fromkeys(looks_[lab].family for lab in labels))
    by_family = [[lab for lab in labels if looks_[lab].family == f] for f in families]
    rows = max(len(col) for col in by_family)
    grouped = [lab for col in by_family for lab in col + [None] * (rows - len(col))]
    layouts = [(grouped, len(families))] if len(families) > 1 else []
    layouts += [(labels, n) for n in range(min(4, len(labels)), 0, -1)]
    renderer = fig.canvas.get_renderer()
    for entries, ncol in layouts:
        legend = fig.legend([handle(lab) for lab in entries], [lab or "" for lab in entries],
                            loc="outside lower center", ncol=ncol, columnspacing=1.0, handletextpad=0.4,
                            handlelength=1.8)
        if ncol == 1 or legend.get_window_extent(renderer).width <= fig.bbox.width * 0.98:
            return
        legend.remove()


# --- accuracy matrix -----------------------------------------------------------------------------------
def matrix_heatmap(label: str, runs: Sequence[Run], suite: str, vrange: tuple[float, float]):
    """R[i][j] averaged over seeds, every cell annotated (mean, and ± CI half-width with ≥ 2 seeds)."""
    import matplotlib

    tasks = runs[0].tasks
    T = len(tasks)
    mats = np.stack([_stack(r.R(suite)) for r in runs])
    mean, hw = _band(mats)
    hib = runs[0].matrix["suites"][suite].get("higher_is_better", True)
    cmap = matplotlib.colormaps["cividis" if hib else "cividis_r"].with_extremes(bad="#e0e0e0")
    side = min(WIDTH - 0.6, 1.2 + 0.62 * T)  # plus 0.6 in for the colour bar: one column at most
    fig = _figure(side + 0.6, side)
    ax = fig.add_subplot()
    ax.grid(False)
    im = ax.imshow(np.ma.masked_invalid(mean), cmap=cmap, vmin=vrange[0], vmax=vrange[1], aspect="equal")
    pretrained = runs[0].pretrained
    rows = [f"{t} (base)" if p else t for t, p in zip(tasks, pretrained)]
    ax.set_xticks(range(T), tasks, rotation=30, ha="right")
    ax.set_yticks(range(T), rows)
    ax.set_xlabel("evaluated on task")
    ax.set_ylabel("after training task")
    size = 7 if T <= 4 else 5
    for i in range(T):
        for j in range(T):
            if not np.isfinite(mean[i, j]):
                ax.text(j, i, "–", ha="center", va="center", fontsize=size)
                continue
            frac = (mean[i, j] - vrange[0]) / ((vrange[1] - vrange[0]) or 1.0)
            frac = frac if hib else 1 - frac
            text = f"{mean[i, j]:.2f}" + (f"\n±{hw[i, j]:.2f}" if hw is not None and T <= 5 else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=size, color="white" if frac < 0.55 else "black")
    fig.colorbar(im, ax=ax, shrink=0.8, label=suite)
    ax.set_title(f"{label} (n = {len(runs)})")
    return fig


# --- retention curves ----------------------------------------------------------------------------------
def retention_curves(groups: Mapping[str, Sequence[Run]], suite: str, looks_: Mapping[str, Look],
                     unit: bool = False):
    """One panel per task: its score after each task of the stream, a line per strategy, CI band.

    ``unit``: the score is a fraction (accuracy), so every panel shows 0..1 and bands are clipped to it.
    """
    first = next(iter(groups.values()))[0]
    tasks = first.tasks
    T = len(tasks)
    pretrained = first.pretrained
    with_base = not pretrained[0]  # the stream starts with a trained task: show the base model too
    xlabels = (["base"] if with_base else []) + tasks
    ncols = min(3, T)
    nrows = math.ceil(T / ncols)
    fig = _figure(WIDTH, 1.45 * nrows + 0.2 + _legend_height(looks_, groups))
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False)
    for j in range(T):
        ax = axes[j // ncols][j % ncols]
        for lab, runs in groups.items():
            rows = [([r.matrix["suites"][suite]["base"]] if with_base else []) + list(r.R(suite)) for r in runs]
            arr = np.stack([_stack(rows_)[:, j] for rows_ in rows])
            mean, hw = _band(arr)
            x = np.arange(len(xlabels))
            lk = looks_[lab]
            ax.plot(x, mean, color=lk.color, marker=lk.marker, linestyle=lk.linestyle, markersize=3)
            if hw is not None:
                low, high = clipped(mean, hw, metric_range("score", unit))
                ax.fill_between(x, low, high, color=lk.color, alpha=0.15, linewidth=0)
        trained_at = j + (1 if with_base else 0)
        ax.axvline(trained_at, color="#888888", linewidth=0.6, linestyle=":")
        ax.set_title(tasks[j] + (" (pretrained)" if pretrained[j] else ""))
        ax.set_xticks(range(len(xlabels)), xlabels, rotation=45, ha="right")
        if j % ncols == 0:
            ax.set_ylabel(suite)
        if unit:
            ax.set_ylim(-0.05, 1.05)
    for k in range(T, nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    _legend(fig, looks_, list(groups))
    return fig


# --- stability-plasticity plane ----------------------------------------------------------------------
def _error(e: Estimate, bounds: Range):
    """An asymmetric error bar ``[[below], [above]]`` for ``e``, its interval clipped to ``bounds``."""
    if e.half_width is None:
        return None
    low, high = clipped(e.mean, e.half_width, bounds)
    return [[e.mean - float(low)], [float(high) - e.mean]]


def _errorbar_point(ax, x: Estimate, y: Estimate, lk: Look, x_range: Range = UNBOUNDED,
                    y_range: Range = UNBOUNDED, **kw) -> None:
    ax.errorbar([x.mean], [y.mean], xerr=_error(x, x_range), yerr=_error(y, y_range), color=lk.color,
                marker=lk.marker, linestyle="none", elinewidth=0.8, **kw)


def stability_plasticity(est: Mapping[str, Mapping[str, Estimate]], pareto: Mapping[str, bool],
                         looks_: Mapping[str, Look], suite: str, la_higher_is_better: bool = True,
                         frontier: Sequence[str] = (), unit: bool = False):
    """Forgetting (x, lower is better) vs learning accuracy (y), CI error bars, Pareto front dashed; the
    matched-learning frontier (``frontier``: the reference at other learning rates) a solid grey line."""
    fig = _figure(WIDTH, 2.3 + _legend_height(looks_, est))
    ax = fig.add_subplot()
    labels = [lab for lab in est if est[lab]["forgetting"].mean is not None and est[lab]["learning_acc"].mean is not None]
    for lab in labels:
        _errorbar_point(ax, est[lab]["forgetting"], est[lab]["learning_acc"], looks_[lab],
                        metric_range("forgetting", unit), metric_range("learning_acc", unit), label=lab)
        if pareto.get(lab):
            ax.plot([est[lab]["forgetting"].mean], [est[lab]["learning_acc"].mean], marker="o", markersize=9,
                    markerfacecolor="none", markeredgecolor="#555555", linestyle="none", markeredgewidth=0.8)
    front = sorted((est[lab]["forgetting"].mean, est[lab]["learning_acc"].mean) for lab in labels if pareto.get(lab))
    if len(front) > 1:
        ax.plot([p[0] for p in front], [p[1] for p in front], color="#555555", linestyle="--", linewidth=0.8,
                drawstyle="steps-post", zorder=0)  # the edge of the region the front dominates
    curve = sorted((est[lab]["learning_acc"].mean, est[lab]["forgetting"].mean) for lab in frontier if lab in labels)
    if len(curve) > 1:  # what the matched-learning table interpolates (clbench.reporting.matched)
        ax.plot([p[1] for p in curve], [p[0] for p in curve], color="#999999", linewidth=1.6, alpha=0.6, zorder=0)
    ax.set_xlabel(f"forgetting F ({suite}, lower is better)")
    ax.set_ylabel(f"learning accuracy LA ({suite}) {'↑' if la_higher_is_better else '↓'}")
    if labels:
        _legend(fig, looks_, labels)
    return fig


# --- training loss -----------------------------------------------------------------------------------
def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average (shrinking at the ends); window 1 returns ``y``."""
    if window <= 1 or len(y) < 2:
        return y
    kernel = np.ones(window)
    num = np.convolve(y, kernel, mode="same")
    den = np.convolve(np.ones_like(y), kernel, mode="same")
    return num / den


def loss_window(steps_per_task: int) -> int:
    return max(1, round(steps_per_task / 20))


def loss_curves(groups: Mapping[str, Sequence[Run]], looks_: Mapping[str, Look]):
    """Training loss per global step (seed mean, CI band), smoothed within each task."""
    fig = _figure(WIDTH, 1.9 + _legend_height(looks_, groups))
    ax = fig.add_subplot()
    boundaries: dict[int, str] = {}
    for lab, runs in groups.items():
        curves = [dict(zip(*loss_curve(r))) for r in runs]
        common = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        if not common:
            continue
        ranges = task_step_ranges(runs[0])
        window = loss_window(runs[0].config.get("train", {}).get("steps_per_task", len(common)))
        lk = looks_[lab]
        for t, (lo, hi) in ranges.items():
            boundaries.setdefault(lo, runs[0].tasks[t])
            steps = [s for s in common if lo <= s <= hi]
            if not steps:
                continue
            arr = np.array([[c[s] for s in steps] for c in curves])
            mean, hw = _band(arr)
            x = np.array(steps)
            ax.plot(x, _smooth(mean, window), color=lk.color, linestyle=lk.linestyle, linewidth=0.9)
            if hw is not None:
                low, high = clipped(mean, hw, metric_range("loss", False))
                ax.fill_between(x, _smooth(low, window), _smooth(high, window), color=lk.color, alpha=0.15,
                                linewidth=0)
    for lo, name in sorted(boundaries.items()):
        ax.axvline(lo - 0.5, color="#888888", linewidth=0.6, linestyle=":")
        ax.annotate(name, (lo, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -2),
                    textcoords="offset points", va="top", fontsize=6, color="#555555")
    ax.set_xlabel("optimizer step (global)")
    ax.set_ylabel("training loss")
    _legend(fig, looks_, list(groups), markers=False)
    return fig


# --- cost vs forgetting ------------------------------------------------------------------------------
def cost_vs_forgetting(est: Mapping[str, Mapping[str, Estimate]], looks_: Mapping[str, Look], unit: bool = False):
    """Forgetting against training wall time and against updated parameter elements."""
    from matplotlib.ticker import EngFormatter

    fig = _figure(WIDTH, 1.5 + _legend_height(looks_, est))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, xlabel in ((axes[0], "train_seconds", "train wall time (s)"),
                            (axes[1], "updated_elements", "updated elements")):
        xs = []
        for lab, e in est.items():
            if e[key].mean is None or e["forgetting"].mean is None:
                continue
            xs.append(e[key].mean)
            _errorbar_point(ax, e[key], e["forgetting"], looks_[lab], metric_range(key, unit),
                            metric_range("forgetting", unit))
        if key == "updated_elements" and xs and min(xs) > 0 and max(xs) / min(xs) > 100:
            ax.set_xscale("log")  # LoRA vs full fine-tuning: orders of magnitude apart
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel("forgetting F ↓")
    _legend(fig, looks_, list(est))
    return fig


# --- tiers -------------------------------------------------------------------------------------------
def _every(freq: int | str | None) -> str:
    if freq is None:
        return ""
    return " (never)" if freq == "never" else f" (every {freq} step{'s' if freq != 1 else ''})"


def tier_figure(label: str, data: dict):
    """Top: cumulative updates per tier over the stream (slope = update frequency). Bottom: per-tier
    drift after each task (seed mean, CI)."""
    has_timeline = data["timeline"] is not None
    has_drift = any(e.mean is not None for row in data["drift"] for e in row)
    panels = int(has_timeline) + int(has_drift)
    fig = _figure(WIDTH, 1.9 * panels + 0.3)
    axes = list(np.atleast_1d(fig.subplots(panels, 1)))
    colors = OKABE_ITO[1:] + OKABE_ITO[:1]
    if has_timeline:
        ax = axes.pop(0)
        x0, x1 = data["starts"][0] - 1, data["end"]
        for k, steps in enumerate(data["timeline"]):
            ax.step([x0, *steps, x1], [0, *range(1, len(steps) + 1), len(steps)], where="post",
                    color=colors[k % len(colors)], linestyle=LINESTYLES[k % len(LINESTYLES)],
                    label=f"tier {k}{_every(data['frequencies'][k])}: {len(steps)} updates")
        for start, name in zip(data["starts"], data["tasks"]):
            ax.axvline(start - 0.5, color="#888888", linewidth=0.6, linestyle=":")
            ax.annotate(name, (start, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -2),
                        textcoords="offset points", va="top", fontsize=6, color="#555555")
        ax.set_xlabel(f"optimizer step (global; seed {data['timeline_seed']})")
        ax.set_ylabel("updates so far")
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=6)  # outside: lines fill the axes
    if has_drift:
        ax = axes.pop(0)
        K, width = data["n_tiers"], 0.8 / data["n_tiers"]
        for k in range(K):
            xs = [i + (k - (K - 1) / 2) * width for i in range(len(data["tasks"]))]
            means = [row[k].mean if row[k].mean is not None else np.nan for row in data["drift"]]
            errs = [row[k].half_width if row[k].half_width is not None else 0.0 for row in data["drift"]]
            name = f"tier {k}" if has_timeline else f"tier {k}{_every(data['frequencies'][k])}"  # legend width
            ax.bar(xs, means, width, yerr=errs, color=colors[k % len(colors)], label=name,
                   error_kw={"elinewidth": 0.6})
        ax.set_xticks(range(len(data["tasks"])), data["tasks"])
        ax.set_ylabel("drift (as reported)")
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(3, K) if has_timeline else 1, fontsize=6)
    fig.suptitle(label, fontsize=8)
    return fig


# --- all figures of one stream -----------------------------------------------------------------------
def write_figures(out_dir: Path, prefix: str, groups: Mapping[str, Sequence[Run]], suite: str,
                  est: Mapping[str, Mapping[str, Estimate]], pareto: Mapping[str, bool], reference: str = "sft",
                  frontier: Sequence[str] = ()) -> list[FigureFile]:
    """Draw and save every figure of one stream; returns what was written, in reading order.

    ``prefix`` is the folder (relative to ``out_dir``) the files go to; ``est`` holds the seed
    estimates of the summary table (forgetting, learning_acc, train_seconds, updated_elements).
    """
    import matplotlib

    groups = {lab: groups[lab] for lab in order_labels(groups, reference)}  # legends in table order
    est = {lab: est[lab] for lab in groups}
    looks_ = looks({lab: runs[0].config["strategy"]["name"] for lab, runs in groups.items()}, reference,
                   {lab: run_family(runs[0].config["strategy"]) for lab, runs in groups.items()})
    first = next(iter(groups.values()))[0]
    hib = first.matrix["suites"][suite].get("higher_is_better", True)
    n_text = ", ".join(f"{lab}: {len(runs)}" for lab, runs in groups.items())
    out: list[FigureFile] = []

    def emit(fig, name: str, title: str, caption: str) -> None:
        stem = f"{prefix}/{name}"
        save(fig, out_dir, stem)
        out.append(FigureFile(stem, title, caption))

    with matplotlib.rc_context(STYLE):
        values = [v for runs in groups.values() for r in runs for row in r.R(suite) for v in row if v is not None]
        unit = hib and values and min(values) >= 0 and max(values) <= 1
        vrange = (0.0, 1.0) if unit else (min(values, default=0.0), max(values, default=1.0))
        bounds = ("scores to [0, 1], forgetting to [−1, 1], costs to ≥ 0" if unit
                  else "costs and losses to ≥ 0; scores unclipped")
        ci = f"95% Student t intervals over seeds, clipped to the metric's range ({bounds}; n per strategy — {n_text})"
        for lab, runs in groups.items():
            emit(matrix_heatmap(lab, runs, suite, vrange), f"matrix-{safe_label(lab)}", f"Accuracy matrix: {lab}",
                 f"R[i][j] ({suite}) of {lab}: score on task j (column) after training task i (row), mean over "
                 f"{len(runs)} seeds, ± the 95% t half-width below each mean; one colour scale for every strategy.")
        emit(retention_curves(groups, suite, looks_, bool(unit)), "retention", "Retention curves",
             f"Each task's {suite} score (y) after each task of the stream (x), one panel per task; dotted line: "
             f"where that task is trained. Lines: seed means; bands: {ci}.")
        curve = (f" Solid grey line: {reference} at other learning rates ({', '.join(frontier)}), the frontier the "
                 f"matched-learning table compares every strategy with." if len(frontier) > 1 else "")
        emit(stability_plasticity(est, pareto, looks_, suite, hib, frontier, bool(unit)), "stability-plasticity",
             "Stability–plasticity plane",
             f"Average forgetting F (x) vs learning accuracy LA (y), both on {suite}; error bars: {ci}. Circled, "
             f"joined by the dashed line: the Pareto front (no other strategy has lower F and higher LA).{curve}")
        for lab, runs in groups.items():
            data = tier_data(runs)
            if data is not None:
                emit(tier_figure(lab, data), f"tiers-{safe_label(lab)}", f"Tiers: {lab}",
                     f"{lab}: cumulative updates of each tier over the stream (slope = update frequency; seed "
                     f"{data['timeline_seed']}), and each tier's drift after each task as reported by the strategy's "
                     f"diagnostics (bars: seed means, error bars: 95% t intervals).")
        if any(r.log for runs in groups.values() for r in runs):
            window = loss_window(first.config.get("train", {}).get("steps_per_task", 0))
            smoothing = (f"smoothed within each task by a centred moving average of {window} steps" if window > 1
                         else "unsmoothed")
            emit(loss_curves(groups, looks_), "loss", "Training loss",
                 f"Training loss per optimizer step (seed means; bands: {ci}), {smoothing}; dotted lines: task "
                 f"boundaries.")
        emit(cost_vs_forgetting(est, looks_, bool(unit)), "cost-forgetting", "Cost vs forgetting",
             f"Average forgetting F ({suite}) against training wall time (left) and parameter elements updated "
             f"by the optimizer (right); error bars: {ci}.")
    return out
