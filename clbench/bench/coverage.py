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

from clbench.reporting.bootstrap import SuiteItems, bootstrap_intervals, point_estimate, replicates_from_items
from clbench.reporting.matched import frontier_at, matched_comparisons
from clbench.reporting.stats import significant
from clbench.reporting.tables import Column, build_table
from clbench.results.aggregate import Run

TASKS = ("general", "medical", "notes")
REFERENCE = "sft"
# the README's frontiers, (lr, LA, F, general retention) per row: the quick benchmark (sft at 3e-4, 1e-3,
# its tuned 1.5e-3, 3e-3) and the real-model benchmark (SmolLM2: 1e-4, 2e-4, 5e-4, 2e-3)
README_FRONTIER = ((3e-4, 0.292, 0.060, -0.050), (1e-3, 0.562, 0.250, -0.222), (1.5e-3, 0.722, 0.486, -0.417),
                   (3e-3, 0.847, 0.686, -0.706))
REAL_FRONTIER = ((1e-4, 0.271, 0.221, -0.247), (2e-4, 0.451, 0.447, -0.463), (5e-4, 0.882, 0.540, -0.330),
                 (2e-3, 0.979, 0.656, -0.450))
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
    reference_row: int = 2  # the frontier row that is sft itself (at its tuned rate)
    # strategies compared with it: (label, LA, true ΔF, true Δ retention)
    compared: tuple = (("less", 0.45, -0.10, 0.10), ("same", 0.65, 0.0, 0.0), ("more", 0.74, 0.10, -0.05))

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
    return [strategy_at(REFERENCE if i == design.reference_row else f"sft-lr{lr:g}", la, f, r,
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


def report_statistics(exp: Experiment, replicates: int, key: str, cells: bool = True) -> tuple[list, dict | None]:
    """The matched-learning comparisons and (``cells``) the bootstrap intervals of ``numbers.json``: every
    strategy's own value and its paired difference from ``sft``, drawn as ``clbench.reporting.build`` draws
    them."""
    groups = as_runs(exp)
    seeds = tuple(range(exp.design.seeds))
    found = {lab: (seeds, items) for lab, items in exp.items.items()}
    reps = replicates_from_items(found, list(TASKS), key, replicates)
    comps = matched_comparisons(groups, "qa", REFERENCE, reps)[2]
    if not cells:
        return comps, None
    own = replicates_from_items(found, list(TASKS), key, replicates, shared_items=True)
    return comps, bootstrap_intervals(groups, "qa", REFERENCE, reps=reps, own=own)


def matched_results(exp: Experiment, replicates: int, key: str) -> list:
    return report_statistics(exp, replicates, key, cells=False)[0]


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
    """The frontier and the design's strategies inside it (forgetting less, as much, more at matched LA)."""
    return frontier_strategies(design) + [compared(design, *point) for point in design.compared]


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
    """How many intervals contained the truth (or tables marked a difference), of how many; ``none``:
    comparisons that got no interval."""

    hits: int = 0
    total: int = 0
    none: int = 0

    def add(self, hit: bool | None) -> None:
        if hit is None:
            self.none += 1
        else:
            self.total += 1
            self.hits += bool(hit)

    def rate(self) -> float | None:
        return self.hits / self.total if self.total else None

    def as_dict(self) -> dict:
        return {"rate": self.rate(), "of": self.total, "no_interval": self.none}


def _inside(low, high, truth) -> bool | None:
    return None if low is None or high is None else low <= truth <= high


BOOTSTRAP_KEYS = ("acc", "forgetting", "learning_acc", "general_retention")


def matched_coverage(design: Design, experiments: int, rng, replicates: int = 1000,
                     strategies: Sequence[Strategy] | None = None, cells: dict | None = None) -> dict[str, Tally]:
    """Per compared strategy and metric: does the matched table's interval contain the population ΔF
    (Δ retention)? ``cells``, when given, collects the same for ``numbers.json``'s bootstrap intervals:
    ``cells["own"]`` (a strategy's value) and ``cells["diff"]`` (its difference from ``sft``)."""
    strategies = list(strategies or coverage_strategies(design))
    tallies: dict[str, Tally] = {}
    sft = next((g for g in strategies if g.label == REFERENCE), None)
    for i in range(experiments):
        comps, intervals = report_statistics(simulate(design, strategies, rng), replicates, f"coverage{i}|qa",
                                             cells=cells is not None)
        if cells is not None:
            for g in strategies:
                pop = truth_population(design, g)
                for key in BOOTSTRAP_KEYS:
                    iv = intervals[(g.label, key)]
                    cells.setdefault("own", Tally()).add(_inside(iv["low"], iv["high"], pop[key]))
                    if g.label != REFERENCE and sft is not None:
                        diff = iv["diff_vs_reference"]
                        truth = pop[key] - truth_population(design, sft)[key]
                        cells.setdefault("diff", Tally()).add(None if diff is None else
                                                              _inside(diff["low"], diff["high"], truth))
        for m in comps:
            g = next(s for s in strategies if s.label == m.strategy)
            if g.lr is not None:  # a frontier row cut from the frontier (its LA fell below a slower rate's)
                continue
            f, r = matched_truth(design, g.learning)
            truth = truth_population(design, g)[m.metric] - (f if m.metric == "forgetting" else r)
            tallies.setdefault(f"{m.strategy}:{m.metric}", Tally()).add(_inside(m.low, m.high, truth))
    return tallies


def matched_fwer(design: Design, experiments: int, rng, replicates: int = 1000, k: int = 9
                 ) -> tuple[Tally, float, Tally]:
    """With every true ΔF and Δ retention zero (``k`` strategies on the frontier): the share of tables with
    a †, the mean number of comparisons Holm adjusts over, and the share of comparisons with an unadjusted
    p < 0.05 (each test's own size)."""
    strategies, tally, family, single = null_matched_strategies(design, k), Tally(), [], Tally()
    for i in range(experiments):
        tested = [c for c in matched_results(simulate(design, strategies, rng), replicates, f"null{i}|qa")
                  if c.p is not None]
        family.append(len(tested))
        tally.add(any(significant(c.p_holm) for c in tested))
        for c in tested:
            single.add(significant(c.p))
    return tally, float(np.mean(family)), single


def summary_coverage(design: Design, experiments: int, rng,
                     strategies: Sequence[Strategy] | None = None) -> dict[str, dict[str, Tally]]:
    """The summary table's mean ± t interval of every strategy and column against the expectation over
    seeds for the experiment's items (``given_items``, what it estimates) and the population value."""
    strategies = list(strategies or coverage_strategies(design))
    out = {"given_items": {}, "population": {}}
    for _ in range(experiments):
        exp = simulate(design, strategies, rng)
        for row in summary_numbers(exp):
            if row["column"] == "fwt_base":  # 0 by construction: nothing to cover
                continue
            g = next(s for s in strategies if s.label == row["strategy"])
            hw = row["half_width"]
            low, high = (None, None) if hw is None else (row["mean"] - hw, row["mean"] + hw)
            for kind, truth in (("given_items", truth_given_items(exp, g)), ("population", truth_population(design, g))):
                out[kind].setdefault(row["column"], Tally()).add(_inside(low, high, truth[row["column"]]))
    return out


def summary_fwer(design: Design, experiments: int, rng, k: int = 16) -> tuple[Tally, float, Tally]:
    """With ``k`` strategies that are ``sft`` (every difference zero): the share of summary tables with a †,
    the mean number of tested comparisons, and the share of comparisons with an unadjusted p < 0.05."""
    strategies, tally, family, single = null_summary_strategies(design, k), Tally(), [], Tally()
    for _ in range(experiments):
        tested = [n for n in summary_numbers(simulate(design, strategies, rng)) if n["p_vs_reference"] is not None]
        family.append(len(tested))
        tally.add(any(significant(n["p_holm"]) for n in tested))
        for n in tested:
            if n["p_vs_reference"] < 1.0:  # p = 1: the difference is exactly zero on every seed
                single.add(significant(n["p_vs_reference"]))
    return tally, float(np.mean(family)), single


def per_seed_sd(design: Design, experiments: int, rng) -> dict[str, float]:
    """sft's mean per-seed standard deviation of LA and F (to compare with the README's tables)."""
    sft = [g for g in frontier_strategies(design) if g.label == REFERENCE]
    sds = {"learning_acc": [], "forgetting": []}
    for _ in range(experiments):
        for row in summary_numbers(simulate(design, sft, rng)):
            if row["column"] in sds:
                sds[row["column"]].append(row["sd"])
    return {k: float(np.mean(v)) for k, v in sds.items()}


def pooled(tallies) -> Tally:
    out = Tally()
    for t in tallies:
        out.hits, out.total, out.none = out.hits + t.hits, out.total + t.total, out.none + t.none
    return out


def measure(design: Design, experiments: int, seed: int = 0, replicates: int = 1000) -> dict:
    """Every measurement of this module on ``experiments`` synthetic experiments each."""
    rng = np.random.default_rng(seed)
    cells: dict[str, Tally] = {}
    matched = matched_coverage(design, experiments, rng, replicates, cells=cells)
    fwer_m, family_m, single_m = matched_fwer(design, experiments, rng, replicates)
    summary = summary_coverage(design, experiments, rng)
    fwer_s, family_s, single_s = summary_fwer(design, experiments, rng)
    return {"design": {**asdict(design), "sigma_noise": design.sigma_noise}, "experiments": experiments,
            "replicates": replicates, "seed": seed,
            "matched_coverage": {k: t.as_dict() for k, t in matched.items()},
            "matched_coverage_pooled": pooled(matched.values()).as_dict(),
            "bootstrap_cell_coverage": {k: t.as_dict() for k, t in cells.items()},
            "matched_fwer": {**fwer_m.as_dict(), "comparisons": family_m},
            "matched_test_size": single_m.as_dict(),
            "summary_coverage_given_items": {k: t.as_dict() for k, t in summary["given_items"].items()},
            "summary_coverage_given_items_pooled": pooled(summary["given_items"].values()).as_dict(),
            "summary_coverage_population_pooled": pooled(summary["population"].values()).as_dict(),
            "summary_fwer": {**fwer_s.as_dict(), "comparisons": family_s},
            "summary_test_size": single_s.as_dict(),
            "sft_per_seed_sd": per_seed_sd(design, min(experiments, 200), rng)}


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
    "quick": Design(),  # make bench: per-seed sd of sft's LA and F about 0.05, as in the README's table
    "seed-heavy": Design(sigma_seed=0.45, sigma_item=0.6),  # seeds matter more, items less
    "real": Design(items=(100, 24, 24), base_known=0.5, frontier=REAL_FRONTIER, reference_row=3,  # bench-real
                   compared=(("less", 0.6, -0.10, 0.10), ("same", 0.8, 0.0, 0.0), ("more", 0.9, 0.05, -0.05))),
}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _pooled(parts: list[dict]) -> dict:
    hits = sum(round(p["rate"] * p["of"]) for p in parts if p["rate"] is not None)
    of = sum(p["of"] for p in parts)
    return {"rate": hits / of if of else None, "of": of, "no_interval": sum(p["no_interval"] for p in parts)}


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def render(out: dict) -> str:
    """The Markdown page: what README's tables show, then numbers.json's second interval."""
    readme, second = [], []
    for key, r in out["results"].items():
        name, n = key.split("@")
        mc = r["matched_coverage"]
        f = _pooled([v for k, v in mc.items() if k.endswith(":forgetting")])
        g = _pooled([v for k, v in mc.items() if k.endswith(":general_retention")])
        sd = r["sft_per_seed_sd"]
        readme.append([name, n, str(r["experiments"]), _pct(f["rate"]), _pct(g["rate"]),
                       f"{f['no_interval'] + g['no_interval']} of {f['of'] + g['of'] + f['no_interval'] + g['no_interval']}",
                       f"{_pct(r['matched_fwer']['rate'])} ({r['matched_fwer']['comparisons']:.1f})",
                       _pct(r["matched_test_size"]["rate"]),
                       _pct(r["summary_coverage_given_items_pooled"]["rate"]),
                       _pct(r["summary_coverage_population_pooled"]["rate"]),
                       f"{_pct(r['summary_fwer']['rate'])} ({r['summary_fwer']['comparisons']:.1f})",
                       _pct(r["summary_test_size"]["rate"]),
                       f"{sd['learning_acc']:.3f} / {sd['forgetting']:.3f}"])
        cells = r["bootstrap_cell_coverage"]
        second.append([name, n, str(r["experiments"]), _pct(cells["own"]["rate"]), _pct(cells["diff"]["rate"])])
    lines = ["# Coverage of the report's intervals on synthetic experiments (`clbench coverage`)", "",
             ("Synthetic experiments with a known truth, the report's own code on each (model and truths: "
              "`clbench/bench/coverage.py`; docs/measurement.md). Nominal: 95% coverage; at most 5% of tables "
              "with a false † (family-wise rate); each test's own size 5%. Designs: `quick` is `make bench`'s "
              "shape (60 / 24 / 24 items, its frontier), `real` `make bench-real`'s README table (100 world "
              "items, half known, 24 / 24, the SmolLM2 frontier), `seed-heavy` the quick shape with seeds "
              "varying twice as much."), "",
             "## What the README's tables show", ""]
    lines += _table(["design", "seeds", "experiments", "matched ΔF: coverage", "matched Δ retention: coverage",
                     "matched: no interval", "matched: tables with a false † (comparisons)", "matched: test size",
                     "summary mean ± t: coverage of the seed mean (items fixed)", "… of the population value",
                     "summary: tables with a false † (comparisons)", "summary: test size",
                     "sft per-seed sd LA / F"], readme)
    lines += ["", "## numbers.json's second interval (bootstrap)", ""]
    lines += _table(["design", "seeds", "experiments", "a strategy's value: coverage",
                     "its difference from sft: coverage"], second)
    lines += ["", f"Total time: {out['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"
