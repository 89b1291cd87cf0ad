"""Forgetting against the KL divergence from the base model, over every run, and its correlation per mechanism.

Shenfeld et al. 2025 ("RL's Razor") find that forgetting follows the KL divergence of the fine-tuned model
from the base model at matched accuracy. Every evaluation row stores ``kl.kl_base``
(``clbench.eval.kl``: nats per token on held-out general text); here each run is one point, its KL after
the last task against its average forgetting F. A *mechanism* is a strategy (with its plugins, and
``full`` for full fine-tuning), whatever its label: every learning rate of ``sft`` and every period of a
tier strategy is one more point of the same mechanism. Per mechanism with at least :data:`MIN_RUNS`
runs: Pearson's r with its 95% interval (Fisher z, ``scipy.stats.pearsonr``) and Spearman's ρ.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from clbench.reporting.tables import Cell, Table, fmt
from clbench.results.aggregate import Run

MIN_RUNS = 3


def final_kl(run: Run) -> float | None:
    """The KL of the run's last row (None when the run predates the diagnostic or has no KL texts)."""
    value = (run.rows[-1].get("kl") or {}).get("kl_base") if run.rows else None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def mechanism(config: Mapping) -> str:
    strategy = config.get("strategy", {})
    name = strategy.get("name", "?")
    if strategy.get("options", {}).get("mode") == "full":
        name += " (full)"
    plugins = [p if isinstance(p, str) else p.get("name", "?") for p in strategy.get("with", ())]
    return " + ".join([name, *plugins])


@dataclass(frozen=True)
class Correlation:
    mechanism: str
    runs: int
    pearson: float | None
    low: float | None
    high: float | None
    spearman: float | None


def kl_points(groups: Mapping[str, list[Run]], suite: str) -> list[dict]:
    """``{"label", "seed", "mechanism", "kl", "forgetting"}`` of every run with both values."""
    out = []
    for label, runs in groups.items():
        for run in runs:
            kl, f = final_kl(run), run.suite(suite).get("forgetting")
            if kl is not None and f is not None and math.isfinite(f):
                out.append({"label": label, "seed": run.seed, "mechanism": mechanism(run.config), "kl": kl,
                            "forgetting": float(f)})
    return out


def correlations(points: list[dict]) -> list[Correlation]:
    """Per mechanism (sorted), then over all runs."""
    from scipy import stats

    by: dict[str, list[dict]] = {}
    for p in points:
        by.setdefault(p["mechanism"], []).append(p)
    out = []
    for name, mine in [*sorted(by.items()), ("all runs", points)]:
        x, y = [p["kl"] for p in mine], [p["forgetting"] for p in mine]
        if len(mine) < MIN_RUNS or len(set(x)) < 2 or len(set(y)) < 2:
            out.append(Correlation(name, len(mine), None, None, None, None))
            continue
        r = stats.pearsonr(x, y)
        ci = r.confidence_interval(0.95)
        rho = stats.spearmanr(x, y).statistic
        out.append(Correlation(name, len(mine), float(r.statistic), float(ci.low), float(ci.high), float(rho)))
    return out


def kl_table(corrs: list[Correlation], stream: str, suite: str, slug: str) -> Table:
    rows = []
    for c in corrs:
        r = "–" if c.pearson is None else f"{fmt(c.pearson, 2)} [{fmt(c.low, 2)}, {fmt(c.high, 2)}]"
        rows.append((Cell(c.mechanism), Cell(str(c.runs)), Cell(r),
                     Cell("–" if c.spearman is None else fmt(c.spearman, 2))))
    caption = f"Forgetting F against the KL from the base model on {stream} ({suite}): correlation per mechanism."
    notes = (f"One point per run: F after the last task against KL(base ‖ model) after it, in nats per token on the "
             f"pretrained tasks' perplexity texts. Pearson's r with its 95% interval (Fisher z) and Spearman's ρ per "
             f"mechanism (a strategy over all its labels: learning rates, periods), where it has at least "
             f"{MIN_RUNS} runs with distinct values (–: fewer).")
    return Table("KL and forgetting", f"tab:{slug}-kl", caption, ("Mechanism", "Runs", "Pearson r [95%]", "Spearman ρ"),
                 "lrrr", tuple(rows), [c.__dict__ for c in corrs], notes=notes)


def kl_figure(points: list[dict], corrs: list[Correlation], suite: str):
    from clbench.reporting.figures import WIDTH, _figure
    from clbench.reporting.looks import FAMILY_MARKERS, OKABE_ITO

    names = sorted({p["mechanism"] for p in points})
    r_of = {c.mechanism: c.pearson for c in corrs}
    fig = _figure(WIDTH, 2.4 + 0.14 * math.ceil(len(names) / 2))
    ax = fig.add_subplot()
    markers = [m for ms in FAMILY_MARKERS.values() for m in ms]
    for k, name in enumerate(names):
        mine = [p for p in points if p["mechanism"] == name]
        r = r_of.get(name)
        ax.plot([p["kl"] for p in mine], [p["forgetting"] for p in mine], linestyle="none",
                marker=markers[k % len(markers)], color=OKABE_ITO[k % len(OKABE_ITO)], markersize=3.5, alpha=0.85,
                label=f"{name} (r = {fmt(r, 2)})" if r is not None else name)
    kls = [p["kl"] for p in points if p["kl"] > 0]
    if kls and max(kls) / min(kls) > 100:
        ax.set_xscale("log")
    ax.set_xlabel("KL(base ‖ model) after the last task (nats/token)")
    ax.set_ylabel(f"forgetting F ({suite}) ↓")
    fig.legend(loc="outside lower center", ncol=2, fontsize=6)
    return fig


def write_kl_report(out_dir, folder: str, groups: Mapping[str, list[Run]], suite: str, stream: str, slug: str,
                    figures: bool = True):
    """``(table or None, numbers, FigureFile or None)``: nothing when fewer than :data:`MIN_RUNS` runs have a KL."""
    import matplotlib

    from clbench.reporting.figures import STYLE, FigureFile, save

    points = kl_points(groups, suite)
    if len(points) < MIN_RUNS:
        return None, {"points": points}, None
    corrs = correlations(points)
    table = kl_table(corrs, stream, suite, slug)
    figure = None
    if figures:
        with matplotlib.rc_context(STYLE):
            save(kl_figure(points, corrs, suite), out_dir, f"{folder}/figures/kl-forgetting")
        figure = FigureFile(f"{folder}/figures/kl-forgetting", "Forgetting against KL from the base model",
                            f"Average forgetting F ({suite}) of each run (y) against its KL divergence from the base "
                            f"model after the last task (x), one colour and marker per mechanism; r: Pearson's "
                            f"correlation over that mechanism's runs (table KL and forgetting).")
    return table, {"points": points, "correlations": [c.__dict__ for c in corrs]}, figure
