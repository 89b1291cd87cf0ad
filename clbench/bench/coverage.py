"""``clbench coverage`` / ``make coverage``: do the report's intervals cover, and how often does it mark a
difference that is not there? Measured on synthetic experiments whose truth is known.

An experiment is shaped like the README's: a stream ``general`` (pretrained) → ``medical`` → ``notes``
with ``qa``-style 0/1 probe items (the default stream's test halves: 60, 24 and 24 items), ``sft`` at four
learning rates (the matched-learning frontier, at the README's (LA, F, general retention) points), other
strategies, and 3 or 5 seeds. Every item's outcome comes from a latent threshold model (below), so the
values the report estimates are known exactly; the report's own code then runs on the experiment — the
summary table (:func:`clbench.reporting.tables.build_table`: mean ± t interval over seeds, paired t-test
against ``sft``, Holm over the table) and the matched-learning table
(:func:`clbench.reporting.bootstrap.replicates_from_items` and
:func:`clbench.reporting.matched.matched_comparisons`: the hierarchical bootstrap with the frontier rebuilt
in every replicate, Holm over the table) — and each interval is checked against the truth.

**The model.** For strategy ``g`` and seed ``s``, item ``k`` of a trained task is learned when its task is
trained iff ``μ_g + σ_seed·z_s + σ_item·v_k + σ_noise·e > 0`` (``z_s`` a seed effect, shared between
strategies with correlation ``shared``: the seed fixes the data order; ``v_k`` the item's difficulty, the
same for every strategy and seed; ``e`` fresh for every seed and item; σ² sum to 1). A learned ``medical``
item is still known after ``notes`` iff the same kind of draw with ``κ_g`` (own seed effect and item
difficulty) is positive; a ``general`` item the base model knows is still known after each task iff a
draw with ``γ_g`` is. So, in the population of items and seeds, LA = Φ(μ), final medical = Φ(μ)Φ(κ),
final general = b·Φ(γ)², and F, ACC, BWT, general retention follow linearly (``truth_population``); for
the experiment's own items, the same with each item's probability (``truth_given_items``).

**Two truths.** The matched-learning interval resamples probe items as well as seeds, so its truth is the
population value (items and seeds drawn). The summary table's t interval is over seeds only, with the
probe items fixed: its truth is the expectation over seeds *for these items*; its coverage of the
population value is reported too (it is not what it claims).

**What is measured** (``run_coverage``): per procedure and number of seeds, the share of intervals that
contain the truth (with the share of comparisons that get no interval), and with every true difference
zero, the share of experiments in which the table marks at least one comparison (the family-wise false
positive rate Holm is meant to hold at 5%). The numbers go to ``reports/coverage/coverage.{json,md}``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.stats import norm

from clbench.reporting.bootstrap import SuiteItems, point_estimate, replicates_from_items
from clbench.reporting.matched import frontier_at, matched_comparisons
from clbench.reporting.stats import significant
from clbench.reporting.tables import Column, build_table
from clbench.results.aggregate import Run

TASKS = ("general", "medical", "notes")
REFERENCE = "sft"
# the quick benchmark's frontier (README): sft at 3e-4, 1e-3, 1.5e-3, 3e-3 — (LA, F, general retention)
README_FRONTIER = ((3e-4, 0.292, 0.060, -0.050), (1e-3, 0.562, 0.250, -0.222), (1.5e-3, 0.722, 0.486, -0.417),
                   (3e-3, 0.847, 0.686, -0.706))
SUMMARY_KEYS = ("acc", "bwt", "fwt_base", "forgetting", "learning_acc", "general_retention")  # the table's columns


@dataclass(frozen=True)
class Strategy:
    """A strategy's population values: LA, and the final scores that set F and general retention."""

    label: str
    learning: float  # Φ(μ): LA, the share of a trained task's items learned
    kept: float  # Φ(κ): share of learned medical items still known at the end
    general_kept: float  # Φ(γ): share of known general items kept through one task
    lr: float | None = None  # a frontier row (sft at this rate) when set


@dataclass(frozen=True)
class Design:
    """How the synthetic experiments are drawn (defaults: the README's quick benchmark)."""

    seeds: int = 3
    items: tuple[int, int, int] = (60, 24, 24)  # general, medical, notes
    base_known: float = 1.0  # share of general items the base model knows
    sigma_seed: float = 0.2  # standard deviations of the latent draw (squares sum to 1)
    sigma_item: float = 0.8
    shared: float = 0.5  # correlation of one seed's effects between strategies
    frontier: tuple = README_FRONTIER  # (lr, LA, F, retention) per frontier row

    @property
    def sigma_noise(self) -> float:
        return math.sqrt(max(0.0, 1.0 - self.sigma_seed ** 2 - self.sigma_item ** 2))


def strategy_at(label: str, la: float, forgetting: float, retention: float, base_known: float,
                lr: float | None = None) -> Strategy:
    """The strategy with population LA, F and general retention (``retention = b·(q² − 1)``,
    ``F = (b·(1 − q²) + LA·(1 − kept)) / 2``)."""
    q2 = 1.0 + retention / base_known
    kept = 1.0 - (2 * forgetting + retention) / la
    if not (0 < q2 <= 1 and 0 <= kept <= 1 and 0 < la < 1):
        raise ValueError(f"{label}: LA {la}, F {forgetting}, retention {retention} is not reachable")
    return Strategy(label, la, kept, math.sqrt(q2), lr)


def frontier_strategies(design: Design) -> list[Strategy]:
    return [strategy_at(REFERENCE if i == len(design.frontier) - 2 else f"sft-lr{lr:g}", la, f, r,
                        design.base_known, lr) for i, (lr, la, f, r) in enumerate(design.frontier)]


def matched_truth(design: Design, la: float) -> tuple[float, float]:
    """The frontier's (F, retention) at ``la``: linear between its rows, as the report builds it."""
    las = [p[1] for p in design.frontier]
    return (frontier_at(las, [p[2] for p in design.frontier], la), frontier_at(las, [p[3] for p in design.frontier], la))


def compared(design: Design, label: str, la: float, delta_f: float, delta_r: float = 0.0) -> Strategy:
    """A strategy at LA ``la`` whose ΔF and Δ retention at matched learning are ``delta_f``, ``delta_r``."""
    f, r = matched_truth(design, la)
    return strategy_at(label, la, f + delta_f, r + delta_r, design.base_known)


# --- the experiment's items and outcomes -----------------------------------------------------------
@dataclass
class Experiment:
    """One synthetic experiment: items' difficulties, per strategy and seed the 0/1 outcomes."""

    design: Design
    strategies: list[Strategy]
    difficulty: dict[str, np.ndarray] = field(default_factory=dict)  # process → (items,)
    items: dict[str, list[SuiteItems]] = field(default_factory=dict)  # label → per seed


def _draw(rng, design: Design, threshold: float, difficulty: np.ndarray, seed_effect: np.ndarray) -> np.ndarray:
    """(seeds, items) 0/1: ``threshold + σ_seed·z + σ_item·v + σ_noise·e > 0``."""
    e = rng.standard_normal((design.seeds, len(difficulty)))
    return (threshold + design.sigma_seed * seed_effect[:, None] + design.sigma_item * difficulty[None]
            + design.sigma_noise * e > 0).astype(np.float64)


PROCESSES = ("learn_medical", "learn_notes", "keep_medical", "keep_general_1", "keep_general_2")


def simulate(design: Design, strategies: Sequence[Strategy], rng: np.random.Generator) -> Experiment:
    n_g, n_m, n_n = design.items
    exp = Experiment(design, list(strategies))
    sizes = {"learn_medical": n_m, "learn_notes": n_n, "keep_medical": n_m, "keep_general_1": n_g,
             "keep_general_2": n_g}
    exp.difficulty = {p: rng.standard_normal(n) for p, n in sizes.items()}
    known = np.zeros(n_g)
    known[: round(design.base_known * n_g)] = 1.0  # the base model's general items (which ones does not matter)
    common = rng.standard_normal((len(PROCESSES), design.seeds))  # the seeds' shared effects
    zeros_m, zeros_n = np.zeros(n_m), np.zeros(n_n)
    base = (known, zeros_m, zeros_n)
    for g in strategies:
        own = rng.standard_normal((len(PROCESSES), design.seeds))
        z = math.sqrt(design.shared) * common + math.sqrt(1 - design.shared) * own
        thr = {"learn_medical": g.learning, "learn_notes": g.learning, "keep_medical": g.kept,
               "keep_general_1": g.general_kept, "keep_general_2": g.general_kept}
        out = {p: _draw(rng, design, float(norm.ppf(thr[p])), exp.difficulty[p], z[i]) for i, p in enumerate(PROCESSES)}
        per_seed = []
        for s in range(design.seeds):
            general_1 = known * out["keep_general_1"][s]
            rows = ((known, zeros_m, zeros_n),
                    (general_1, out["learn_medical"][s], zeros_n),
                    (general_1 * out["keep_general_2"][s], out["learn_medical"][s] * out["keep_medical"][s],
                     out["learn_notes"][s]))
            per_seed.append(SuiteItems("mean", rows, base, (np.zeros(n_g), zeros_m, zeros_n), (0,), True,
                                       tuple(tuple(range(n)) for n in design.items)))
        exp.items[g.label] = per_seed
    return exp


def _cells(design: Design, g: Strategy, p: dict[str, np.ndarray]) -> dict[str, float]:
    """Metrics from per-item probabilities ``p[process]`` (linear in the cells: R01 = R12 = 0, R10 ⊆ R00)."""
    b = design.base_known
    known_final = b * float(np.mean(p["keep_general_1"] * p["keep_general_2"]))
    r11, r22 = float(np.mean(p["learn_medical"])), float(np.mean(p["learn_notes"]))
    r21 = float(np.mean(p["learn_medical"] * p["keep_medical"]))
    r10 = b * float(np.mean(p["keep_general_1"]))
    return {"acc": (known_final + r21 + r22) / 3, "bwt": ((known_final - b) + (r21 - r11)) / 2, "fwt_base": 0.0,
            "forgetting": ((b - known_final) + (r11 - r21)) / 2, "learning_acc": (r11 + r22) / 2,
            "general_retention": known_final - b, "r10": r10}


def truth_population(design: Design, g: Strategy) -> dict[str, float]:
    """The metrics' values over the population of items and seeds."""
    thr = {"learn_medical": g.learning, "learn_notes": g.learning, "keep_medical": g.kept,
           "keep_general_1": g.general_kept, "keep_general_2": g.general_kept}
    return _cells(design, g, {p: np.array([v]) for p, v in thr.items()})


def truth_given_items(exp: Experiment, g: Strategy) -> dict[str, float]:
    """The metrics' expectations over seeds for the experiment's own items (what a t interval over seeds
    with fixed probe items estimates)."""
    d = exp.design
    within = math.sqrt(d.sigma_seed ** 2 + d.sigma_noise ** 2)
    thr = {"learn_medical": g.learning, "learn_notes": g.learning, "keep_medical": g.kept,
           "keep_general_1": g.general_kept, "keep_general_2": g.general_kept}
    p = {proc: norm.cdf((norm.ppf(v) + d.sigma_item * exp.difficulty[proc]) / within) for proc, v in thr.items()}
    return _cells(d, g, p)


# --- the report's code on an experiment ------------------------------------------------------------
def as_runs(exp: Experiment) -> dict[str, list[Run]]:
    """In-memory runs (what the report reads from disk): config, matrix and per-seed metrics."""
    groups = {}
    for g in exp.strategies:
        runs = []
        for s, items in enumerate(exp.items[g.label]):
            name = "sft" if g.lr is not None else "other"
            config = {"seed": s, "stream": {"name": "sim", "tasks": list(TASKS)},
                      "strategy": {"name": name, "label": g.label, "options": {}},
                      "train": {"lr": g.lr if g.lr is not None else 1.0}}
            runs.append(Run(Path(f"sim/{g.label}/seed_{s}"), config, {}, {"tasks": list(TASKS), "suites": {}},
                            {"suites": {"qa": point_estimate(items)}}, (), ()))
        groups[g.label] = runs
    return groups


def matched_results(exp: Experiment, replicates: int, key: str) -> list:
    groups = as_runs(exp)
    seeds = tuple(range(exp.design.seeds))
    reps = replicates_from_items({lab: (seeds, items) for lab, items in exp.items.items()}, list(TASKS), key,
                                 replicates)
    return matched_comparisons(groups, "qa", REFERENCE, reps)[2]


def summary_numbers(exp: Experiment) -> list[dict]:
    values = {}
    for g in exp.strategies:
        per = [point_estimate(items) for items in exp.items[g.label]]
        values[g.label] = {k: {s: m[k] for s, m in enumerate(per)} for k in SUMMARY_KEYS}
    hib = {"forgetting": False}
    table = build_table("Summary", "tab:sim", "", values, [Column(k, k, hib.get(k, True)) for k in SUMMARY_KEYS],
                        REFERENCE)
    return table.numbers


# --- the measurements --------------------------------------------------------------------------------
def coverage_strategies(design: Design) -> list[Strategy]:
    """The frontier and three strategies inside it: forgetting less, as much, and more at matched LA."""
    return frontier_strategies(design) + [compared(design, "less", 0.45, -0.10, 0.10),
                                          compared(design, "same", 0.65, 0.0, 0.0),
                                          compared(design, "more", 0.78, 0.10, -0.05)]


def null_matched_strategies(design: Design, k: int = 9) -> list[Strategy]:
    """The frontier and ``k`` strategies on it (ΔF = Δ retention = 0) at LAs across its range."""
    lo, hi = design.frontier[0][1], design.frontier[-1][1]
    las = np.linspace(lo + 0.1 * (hi - lo), hi - 0.1 * (hi - lo), k)
    return frontier_strategies(design) + [compared(design, f"null{i}", float(la), 0.0, 0.0) for i, la in enumerate(las)]


def null_summary_strategies(design: Design, k: int = 16) -> list[Strategy]:
    """``sft`` and ``k`` strategies that are ``sft`` (every true difference in the summary table is zero)."""
    sft = next(g for g in frontier_strategies(design) if g.label == REFERENCE)
    return [sft] + [Strategy(f"twin{i}", sft.learning, sft.kept, sft.general_kept) for i in range(k)]


@dataclass
class Tally:
    hits: int = 0
    total: int = 0
    none: int = 0

    def add(self, covered: bool | None) -> None:
        if covered is None:
            self.none += 1
        else:
            self.total += 1
            self.hits += bool(covered)

    def rate(self) -> float | None:
        return self.hits / self.total if self.total else None


def _inside(low, high, truth) -> bool | None:
    return None if low is None or high is None else low <= truth <= high


def measure(design: Design, experiments: int, seed: int = 0, replicates: int = 1000) -> dict:
    """Coverage and false-positive rates of the report's intervals and marks on ``experiments`` draws each."""
    rng = np.random.default_rng(seed)
    matched = {(g, m): Tally() for g in ("less", "same", "more") for m in ("forgetting", "general_retention")}
    summary_items, summary_population = Tally(), Tally()
    per_metric = {k: Tally() for k in SUMMARY_KEYS if k != "fwt_base"}
    sd = {"learning_acc": [], "forgetting": []}
    strategies = coverage_strategies(design)
    for i in range(experiments):
        exp = simulate(design, strategies, rng)
        for m in matched_results(exp, replicates, f"cov{i}|qa"):
            if (m.strategy, m.metric) in matched:
                g = next(s for s in strategies if s.label == m.strategy)
                pop = truth_population(design, g)
                f, r = matched_truth(design, g.learning)
                truth = pop[m.metric] - (f if m.metric == "forgetting" else r)
                matched[(m.strategy, m.metric)].add(_inside(m.low, m.high, truth))
        for row in summary_numbers(exp):
            if row["column"] == "fwt_base":
                continue
            g = next(s for s in strategies if s.label == row["strategy"])
            given, pop = truth_given_items(exp, g), truth_population(design, g)
            low, high = (None, None) if row["half_width"] is None else (row["mean"] - row["half_width"],
                                                                        row["mean"] + row["half_width"])
            summary_items.add(_inside(low, high, given[row["column"]]))
            per_metric[row["column"]].add(_inside(low, high, given[row["column"]]))
            summary_population.add(_inside(low, high, pop[row["column"]]))
            if row["strategy"] == REFERENCE and row["column"] in sd:
                sd[row["column"]].append(row["sd"])
    fp_matched, fp_summary, m_matched, m_summary = Tally(), Tally(), [], []
    null_m, null_s = null_matched_strategies(design), null_summary_strategies(design)
    for i in range(experiments):
        comps = matched_results(simulate(design, null_m, rng), replicates, f"null{i}|qa")
        tested = [c for c in comps if c.p is not None]
        m_matched.append(len(tested))
        fp_matched.add(any(significant(c.p_holm) for c in tested))
        numbers = summary_numbers(simulate(design, null_s, rng))
        tested = [n for n in numbers if n["p_vs_reference"] is not None]
        m_summary.append(len(tested))
        fp_summary.add(any(significant(n["p_holm"]) for n in tested))
    return {
        "design": {**asdict(design), "sigma_noise": design.sigma_noise}, "experiments": experiments,
        "replicates": replicates, "seed": seed,
        "matched": {f"{g}:{m}": {"coverage": t.rate(), "intervals": t.total, "no_interval": t.none}
                    for (g, m), t in matched.items()},
        "matched_fwer": {"rate": fp_matched.rate(), "experiments": fp_matched.total,
                         "comparisons_mean": float(np.mean(m_matched))},
        "summary_coverage_given_items": {"coverage": summary_items.rate(), "intervals": summary_items.total},
        "summary_coverage_by_metric": {k: t.rate() for k, t in per_metric.items()},
        "summary_coverage_population": {"coverage": summary_population.rate(), "intervals": summary_population.total},
        "summary_fwer": {"rate": fp_summary.rate(), "experiments": fp_summary.total,
                         "comparisons_mean": float(np.mean(m_summary))},
        "sft_per_seed_sd": {k: float(np.mean(v)) for k, v in sd.items()},
    }


def binomial_band(rate: float, n: int, z: float = 3.29) -> float:
    """Half-width of the normal approximation to a binomial proportion's ``z`` band (3.29: two-sided 0.1%)."""
    return z * math.sqrt(rate * (1 - rate) / n)


def run_coverage(out_dir: Path, experiments: int = 1000, seeds: Sequence[int] = (3, 5), seed: int = 0,
                 designs: dict[str, Design] | None = None) -> dict:
    """Every design at every number of seeds; writes ``coverage.json`` and ``coverage.md`` to ``out_dir``."""
    designs = designs or DESIGNS
    started = time.perf_counter()
    results = {}
    for name, design in designs.items():
        for n in seeds:
            t0 = time.perf_counter()
            d = Design(**{**asdict(design), "seeds": n})
            results[f"{name}@{n}"] = {**measure(d, experiments, seed), "seconds": time.perf_counter() - t0}
    out = {"results": results, "seconds": time.perf_counter() - started}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "coverage.json").write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    (out_dir / "coverage.md").write_text(render(out))
    return out


DESIGNS = {
    "readme": Design(),
    "seed-heavy": Design(sigma_seed=0.45, sigma_item=0.6),
}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def render(out: dict) -> str:
    lines = ["# Coverage of the report's intervals on synthetic experiments (`clbench coverage`)", "",
             "Nominal: 95% coverage, family-wise false-positive rate ≤ 5%. Model and truths: "
             "`clbench/bench/coverage.py`.", "",
             "| design | seeds | experiments | matched ΔF / Δret. coverage (less, same, more) | no interval | "
             "matched FWER (m) | summary t coverage, given items | … of population values | summary FWER (m) | "
             "sft per-seed sd LA / F |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in out["results"].items():
        name, n = key.split("@")
        cov = ", ".join(f"{_pct(r['matched'][f'{g}:forgetting']['coverage'])} / "
                        f"{_pct(r['matched'][f'{g}:general_retention']['coverage'])}" for g in ("less", "same", "more"))
        none = sum(v["no_interval"] for v in r["matched"].values())
        total = none + sum(v["intervals"] for v in r["matched"].values())
        lines.append(f"| {name} | {n} | {r['experiments']} | {cov} | {_pct(none / total if total else None)} | "
                     f"{_pct(r['matched_fwer']['rate'])} ({r['matched_fwer']['comparisons_mean']:.1f}) | "
                     f"{_pct(r['summary_coverage_given_items']['coverage'])} | "
                     f"{_pct(r['summary_coverage_population']['coverage'])} | "
                     f"{_pct(r['summary_fwer']['rate'])} ({r['summary_fwer']['comparisons_mean']:.1f}) | "
                     f"{r['sft_per_seed_sd']['learning_acc']:.3f} / {r['sft_per_seed_sd']['forgetting']:.3f} |")
    lines += ["", f"Total time: {out['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"
