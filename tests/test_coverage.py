"""The report's intervals on synthetic experiments with a known truth (``clbench/bench/coverage.py``; the
larger run is ``clbench coverage``, written to reports/coverage/).

First the simulator itself: its closed-form truths are what its experiments average to. Then the report's
own code on a few hundred experiments with a fixed seed: the intervals contain the truth at least as often
as 95% less the binomial band of the sample (z = 3.29, two-sided 0.1%: a failure is a real shortfall, not
chance), and with every true difference zero the tables mark a difference in at most 5% plus that band.
"""

from __future__ import annotations

import numpy as np
import pytest

from clbench.bench import coverage as C


def test_the_simulators_truths_are_what_its_experiments_average_to():
    """Many seeds and items: the mean of the per-seed metrics is the population value; many seeds on one
    experiment's own items: their mean is the value given those items (which differs from the population's)."""
    d = C.Design(seeds=400, items=(3000, 3000, 3000))
    g = C.compared(d, "x", 0.6, -0.05, 0.03)
    rng = np.random.default_rng(0)
    exp = C.simulate(d, [g], rng)
    from clbench.reporting.bootstrap import point_estimate

    per_seed = [point_estimate(items) for items in exp.items["x"]]
    pop, given = C.truth_population(d, g), C.truth_given_items(exp, g)
    assert pop["learning_acc"] == pytest.approx(0.6) and pop["general_retention"] == pytest.approx(
        C.matched_truth(d, 0.6)[1] + 0.03)
    for key in ("acc", "bwt", "forgetting", "learning_acc", "general_retention"):
        mean = float(np.mean([m[key] for m in per_seed]))
        assert mean == pytest.approx(given[key], abs=0.005), key
        assert given[key] == pytest.approx(pop[key], abs=0.02), key
    small = C.Design(seeds=400, items=(60, 24, 24))  # few items: the given-items value is not the population's
    exp = C.simulate(small, [g], rng)
    given = C.truth_given_items(exp, g)
    mean = float(np.mean([point_estimate(items)["learning_acc"] for items in exp.items["x"]]))
    assert mean == pytest.approx(given["learning_acc"], abs=0.01)
    assert abs(given["learning_acc"] - pop["learning_acc"]) > 0.01


def test_strategies_are_placed_at_the_asked_matched_differences():
    d = C.Design()
    for la, df, dr in ((0.45, -0.1, 0.1), (0.65, 0.0, 0.0), (0.74, 0.1, -0.05)):
        pop = C.truth_population(d, C.compared(d, "x", la, df, dr))
        f, r = C.matched_truth(d, la)
        assert (pop["learning_acc"], pop["forgetting"] - f, pop["general_retention"] - r) == pytest.approx((la, df, dr))
    with pytest.raises(ValueError, match="not reachable"):
        C.compared(d, "x", 0.45, -0.3, 0.0)


EXPERIMENTS = 300  # fixed seed; the band below is the binomial's for this many independent experiments
REPLICATES = 200  # bootstrap replicates per interval (the report draws 1000; fewer keeps the test fast)


def at_least(rate: float, n: int, nominal: float = 0.95) -> bool:
    return rate >= nominal - C.binomial_band(nominal, n)


def at_most(rate: float, n: int, nominal: float = 0.05) -> bool:
    return rate <= nominal + C.binomial_band(nominal, n)


def test_the_matched_learning_interval_covers_the_true_difference_at_three_seeds():
    """The quick benchmark's shape at 3 seeds: the frontier of 4 sft rates and a strategy forgetting as
    much as sft at its LA, and one forgetting 0.10 less (retention 0.10 better): the table's bootstrap
    interval (frontier rebuilt per replicate) contains the true ΔF and Δ retention."""
    d = C.Design(seeds=3)
    strategies = C.frontier_strategies(d) + [C.compared(d, *p) for p in d.compared[:2]]
    tallies = C.matched_coverage(d, EXPERIMENTS, np.random.default_rng(1), REPLICATES, strategies)
    for key, t in tallies.items():
        assert t.total >= 0.9 * EXPERIMENTS and at_least(t.rate(), EXPERIMENTS), (key, t)


def test_holm_keeps_the_matched_tables_false_marks_at_five_percent():
    """Five strategies on the frontier (ΔF = Δ retention = 0), ten comparisons: a table with any † is rare."""
    tally, family, _ = C.matched_fwer(C.Design(seeds=3), EXPERIMENTS, np.random.default_rng(2), REPLICATES, k=5)
    assert family > 7 and at_most(tally.rate(), tally.total), (tally, family)


def test_the_summary_t_interval_covers_the_seed_mean_and_holm_keeps_its_marks_at_five_percent():
    """Mean ± t interval over 3 seeds contains the expectation over seeds for the experiment's items
    (what it estimates; its coverage of the population value is clbench coverage's to report); eight
    strategies that are sft: a summary table with any † is rare (Holm over their 40 tested cells)."""
    d = C.Design(seeds=3)
    sft = [g for g in C.frontier_strategies(d) if g.label == C.REFERENCE]
    strategies = sft + [C.compared(d, *d.compared[1])]
    given = C.summary_coverage(d, EXPERIMENTS, np.random.default_rng(3), strategies)["given_items"]
    for column, t in given.items():
        assert t.total == 2 * EXPERIMENTS and at_least(t.rate(), EXPERIMENTS), (column, t)
    tally, family, _ = C.summary_fwer(d, EXPERIMENTS, np.random.default_rng(4), k=8)
    assert family >= 40 and at_most(tally.rate(), tally.total), (tally, family)
