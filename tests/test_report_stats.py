"""The report's statistics against hand computation and against scipy / statsmodels (t interval, paired
test, Holm, best, Pareto front)."""

from __future__ import annotations

import math

import pytest

from clbench.reporting.stats import (
    CONSTANT,
    NO_PAIRS,
    best,
    holm,
    mean_ci,
    paired_p,
    paired_test,
    pareto_optimal,
    significant,
)


def t975_df2() -> float:
    """Student t quantile 0.975 with 2 degrees of freedom, closed form: (2p−1) / sqrt(2p(1−p))."""
    p = 0.975
    return (2 * p - 1) / math.sqrt(2 * p * (1 - p))


def test_mean_ci_is_the_student_t_interval():
    e = mean_ci([0.5, 0.7, 0.9])
    assert e.n == 3
    assert e.mean == pytest.approx(0.7, abs=1e-12)
    assert e.sd == pytest.approx(0.2, abs=1e-12)
    assert e.half_width == pytest.approx(t975_df2() * 0.2 / math.sqrt(3), rel=1e-9)  # 0.4968...
    assert (e.low, e.high) == pytest.approx((0.7 - e.half_width, 0.7 + e.half_width))


def test_mean_ci_skips_missing_and_has_no_interval_for_one_seed():
    assert mean_ci([None, 0.4]).mean == pytest.approx(0.4)
    assert mean_ci([None, 0.4]).half_width is None and mean_ci([0.4]).n == 1
    assert mean_ci([None, float("nan")]).mean is None and mean_ci([]).n == 0
    two = mean_ci([1.0, 3.0])  # sd √2, n 2: half-width = t_{0.975,1} = tan(π · 0.475) = 12.706
    assert two.half_width == pytest.approx(math.tan(math.pi * 0.475), rel=1e-9)


def test_paired_t_test_matches_hand_computation_on_common_seeds():
    a = {0: 1.0, 1: 2.0, 2: 3.5, 7: 100.0}  # seed 7 has no partner: left out
    b = {0: 0.5, 1: 1.0, 2: 2.0}
    # differences 0.5, 1.0, 1.5: mean 1, sd 0.5, t = 1 / (0.5 / sqrt 3) = sqrt 12; df 2: p = 1 − t / sqrt(t² + 2)
    t = math.sqrt(12)
    p, n = paired_p(a, b)
    assert n == 3
    assert p == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-9)  # 0.0742: not significant
    assert not significant(p)


def test_paired_test_degenerate_cases():
    # the same non-zero difference on every seed: t is undefined, no test possible (not "p = 0")
    assert paired_p({0: 2.0, 1: 3.0}, {0: 1.0, 1: 2.0}) == (None, 2)
    assert paired_test({0: 2.0, 1: 3.0}, {0: 1.0, 1: 2.0}).no_test == CONSTANT
    assert not significant(paired_p({0: 5.0, 1: 5.0, 2: 5.0}, {0: 1.0, 1: 1.0, 2: 1.0})[0])
    assert paired_p({0: 2.0, 1: 3.0}, {0: 2.0, 1: 3.0}) == (1.0, 2)  # no difference
    assert paired_p({0: 2.0, 1: 3.0}, {0: 1.0, 5: 2.0}) == (None, 1)  # one pair: no test
    # seed 0 missing on one side: pairs are seeds 1, 2; differences 1.0, 1.5 → t = 1.25 / (0.3536 / √2) = 5,
    # and with 1 degree of freedom p = 1 − (2/π)·atan(t)
    p, n = paired_p({0: None, 1: 3.0, 2: 4.0}, {0: 1.0, 1: 2.0, 2: 2.5})
    assert n == 2 and p == pytest.approx(1 - 2 / math.pi * math.atan(5.0), rel=1e-9)
    p, n = paired_p({0: 0.9, 1: 0.8, 2: 0.95}, {0: 0.5, 1: 0.45, 2: 0.52})
    assert n == 3 and significant(p)


def test_best_is_direction_aware_and_keeps_ties():
    assert best([0.2, 0.5, None, 0.5], higher_is_better=True) == {1, 3}
    assert best([0.2, 0.5, None, 0.1], higher_is_better=False) == {3}
    assert best([None, None], True) == set()


def test_pareto_front_on_forgetting_and_learning_accuracy():
    points = [(0.10, 0.50),  # A: optimal
              (0.30, 0.90),  # B: learns most: optimal
              (0.05, 0.20),  # C: forgets least but learns least: not beaten on both, optimal
              (0.20, 0.40),  # D: A forgets less and learns more: dominated
              (0.10, 0.50),  # E: ties A exactly: neither beats the other
              (None, 0.99)]  # F: no forgetting value: cannot be placed
    assert pareto_optimal(points) == [True, True, True, False, True, False]
    # a lower-is-better score (perplexity): D's LA 0.40 is now better than A's 0.50
    assert pareto_optimal([(0.10, 0.50), (0.20, 0.40), (0.20, 0.60)], la_higher_is_better=False) == [True, True, False]


def test_holm_bonferroni_on_a_hand_computed_family():
    # m = 4 sorted p: 0.01, 0.02, 0.03, 0.04 → 4·0.01, 3·0.02, 2·0.03, 1·0.04 = .04, .06, .06, .04,
    # made monotone: .04, .06, .06, .06; None is not a comparison
    assert holm([0.03, None, 0.01, 0.04, 0.02]) == pytest.approx([0.06, None, 0.04, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.04]) == pytest.approx([0.04]) and holm([]) == [] and holm([None]) == [None]
    # raw p = 0.02 is significant alone, not among 13 comparisons of which it is the smallest (13·0.02)
    assert holm([0.02] + [0.5] * 12)[0] == pytest.approx(0.26)


# --- against well-kept libraries -------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_mean_ci_is_scipys_one_sample_t_interval(n):
    import numpy as np
    from scipy import stats

    rng = np.random.default_rng(n)
    for _ in range(5):
        xs = rng.normal(0.5, 0.2, size=n)
        e = mean_ci(list(xs))
        low, high = stats.ttest_1samp(xs, 0.0).confidence_interval(0.95)
        assert (e.low, e.high) == pytest.approx((low, high), rel=1e-12, abs=1e-14)
        assert e.sd == pytest.approx(float(np.std(xs, ddof=1)), rel=1e-12)
        low90, high90 = stats.t.interval(0.9, n - 1, loc=0, scale=stats.sem(xs))
        assert mean_ci(list(xs), confidence=0.9).half_width == pytest.approx((high90 - low90) / 2, rel=1e-12)


def test_paired_test_is_scipys_test_on_the_per_seed_differences():
    """Paired on the seed (not on the position in the dict, not unpaired), two-sided."""
    import numpy as np
    from scipy import stats

    rng = np.random.default_rng(0)
    for n in (2, 3, 5):
        a = {s: float(v) for s, v in zip(range(n), rng.normal(0.6, 0.1, n))}
        b = {s: a[s] - float(d) for s, d in zip(range(n), rng.normal(0.05, 0.05, n))}
        shuffled = dict(sorted(b.items(), reverse=True))  # insertion order must not matter
        diffs = [a[s] - b[s] for s in range(n)]
        t = paired_test(a, shuffled)
        assert t.pairs == n and t.no_test is None
        assert t.p == pytest.approx(float(stats.ttest_1samp(diffs, 0.0).pvalue), rel=1e-10)
        assert t.p == pytest.approx(float(stats.ttest_rel(list(a.values()), [b[s] for s in a]).pvalue), rel=1e-10)
        assert t.p != pytest.approx(float(stats.ttest_ind(list(a.values()), list(b.values())).pvalue), rel=1e-3)


def test_a_single_seed_pair_gives_the_no_pairs_reason():
    t = paired_test({0: 0.9, 1: 0.8}, {1: 0.5, 2: 0.4})  # only seed 1 in common
    assert (t.p, t.pairs, t.no_test) == (None, 1, NO_PAIRS)
    assert paired_test({}, {}).no_test == NO_PAIRS
    # and the table says so: no mark, the reason in numbers.json, the caption's "no test" sentence
    from clbench.reporting.tables import Column, build_table

    table = build_table("T", "tab:t", "Caption.", {"sft": {"acc": {0: 0.5}}, "x": {"acc": {0: 0.9}}},
                        [Column("acc", "ACC", True)])
    (x,) = [n for n in table.numbers if n["strategy"] == "x"]
    assert (x["p_vs_reference"], x["pairs"], x["no_test"]) == (None, 1, NO_PAIRS)
    assert "no test against sft (fewer than two seeds in common)" in table.caption


def test_holm_is_statsmodels_holm_over_the_present_p_values():
    import numpy as np
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(1)
    for m in (1, 2, 7, 20, 78):
        ps = list(rng.uniform(0, 0.2, m) ** 2)
        with_gaps = [None, *ps[: m // 2], None, *ps[m // 2:]]
        want = multipletests(ps, method="holm")[1]
        got = [g for g in holm(with_gaps) if g is not None]
        assert got == pytest.approx(list(want), rel=1e-12, abs=0)
        assert holm(with_gaps)[0] is None and holm(with_gaps)[m // 2 + 1] is None
