"""Forgetting at matched learning (``clbench.reporting.matched``) on runs chosen by hand.

LA averages the diagonal of R over every task, the pretrained one included (its base score, 1 here).
The frontier is ``sft`` (LA 1, F 0.5) and ``sft-low`` (the same row at another learning rate: LA 2/3,
F 0), so F_frontier(LA) = 1.5 (LA − 2/3) on [2/3, 1]. Probe items within a (seed, task) are all alike
except where a test says otherwise, so bootstrap replicates equal the point value and every number
below is worked out on paper.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from clbench.reporting.bootstrap import bootstrap_replicates
from clbench.reporting.build import build_report
from clbench.reporting.matched import frontier_at, frontier_labels, matched_comparisons, matched_table
from tests.test_report_bootstrap import ALL, HALF, NONE, groups_of, write_item_run

BASE, REF = [ALL, NONE, NONE], [NONE, NONE, NONE]


def rows(m1, m2, n2):
    """general (pretrained) always right; medical m1 after its task and m2 at the end; notes n2."""
    return [[ALL, NONE, NONE], [ALL, m1, NONE], [ALL, m2, n2]]


def write(root, label, R, **config):
    """Seeds 0 and 1 of ``label`` (identical), with ``config``'s sections merged into config.json."""
    for seed in (0, 1):
        d = write_item_run(root, label, seed, R, BASE, REF)
        cfg = json.loads((d / "config.json").read_text())
        for section, values in config.items():
            cfg[section].update(values)
        (d / "config.json").write_text(json.dumps(cfg))


@pytest.fixture
def grid(tmp_path):
    # LA is over the two trained tasks (general is pretrained)
    write(tmp_path, "sft", rows(ALL, NONE, ALL))                              # LA 1, F 0.5
    write(tmp_path, "sft-low", rows(ALL, ALL, NONE), train={"lr": 0.001})     # LA 1/2, F 0
    write(tmp_path, "keeper", rows(ALL, ALL, ALL), strategy={"name": "cms"})  # LA 1, F 0: ΔF = -0.5
    write(tmp_path, "half", rows(ALL, NONE, HALF), strategy={"name": "cms"})  # LA 3/4, F 0.5: ΔF = +0.25
    write(tmp_path, "idle", rows(NONE, NONE, NONE), strategy={"name": "cms"})  # LA 0: below the frontier
    write(tmp_path, "sft-m3", rows(ALL, NONE, ALL), train={"optimizer": "m3"})  # not a frontier row
    write(tmp_path, "edge", rows(HALF, NONE, HALF), strategy={"name": "cms"})  # LA 1/2 (the end), F 0.25
    return groups_of(tmp_path)


def test_frontier_interpolates_between_its_points_and_never_extrapolates():
    assert frontier_at([0.5, 1.0], [0.0, 0.5], 0.75) == pytest.approx(0.25)
    assert frontier_at([1.0, 0.5], [0.5, 0.0], 0.5) == pytest.approx(0.0)  # order of the points is irrelevant
    assert frontier_at([0.5, 1.0], [0.0, 0.5], 0.25) is None and frontier_at([0.5, 1.0], [0.0, 0.5], 1.01) is None
    assert frontier_at([0.5, 0.5, 1.0], [0.0, 0.2, 0.5], 0.5) == pytest.approx(0.1)  # equal LA: averaged
    assert frontier_at([0.5], [0.0], 0.5) is None  # one point is no frontier


def test_frontier_rows_differ_from_the_reference_in_the_learning_rate_only(grid):
    assert sorted(frontier_labels(grid, "sft")) == ["sft", "sft-low"]
    assert frontier_labels(grid, "absent") == []


def test_matched_deltas_intervals_and_holm(grid):
    front, dropped, comps = matched_comparisons(grid, "qa", "sft", bootstrap_replicates(grid, "qa"))
    by = {(m.strategy, m.metric): m for m in comps}
    assert sorted(front) == ["sft", "sft-low"] and dropped == []
    assert {m.strategy for m in comps} == {"keeper", "half", "idle", "sft-m3", "edge"}
    keeper = by[("keeper", "forgetting")]
    assert (keeper.learning_acc, keeper.frontier_value, keeper.delta) == pytest.approx((1.0, 0.5, -0.5))
    assert (keeper.low, keeper.high, keeper.p) == pytest.approx((-0.5, -0.5, 0.0))
    half = by[("half", "forgetting")]
    assert (half.learning_acc, half.frontier_value, half.delta) == pytest.approx((3 / 4, 0.25, 0.25))
    # notes' items are half right: resampling them moves LA (and so the frontier) and not F, so the
    # interval spreads around +0.25 but stays above 0 (LA_b = (1 + notes_b) / 2, so ΔF_b = 0.5 − 0.5 notes_b)
    assert 0.1 < half.low < 0.25 < half.high < 0.4 and half.p == 0.0
    # at the frontier's end, with items that vary: about half the replicates fall below the frontier,
    # so the point value stands but no interval and no test are given
    edge = by[("edge", "forgetting")]
    assert (edge.learning_acc, edge.delta) == pytest.approx((1 / 2, 0.25))
    assert 0.3 < edge.in_range < 0.7 and edge.low is None and edge.p is None
    idle = by[("idle", "forgetting")]
    assert idle.delta is None and idle.side == "below"
    retention = by[("keeper", "general_retention")]  # general is kept by everyone: Δ = 0, p = 1
    assert retention.delta == pytest.approx(0.0) and retention.p == 1.0
    # Holm over the comparisons with a p-value (idle has none): the zeros stay 0, the ones stay 1
    assert by[("half", "forgetting")].p_holm == 0.0 and retention.p_holm == 1.0


def test_matched_table_and_report_file(grid, tmp_path):
    table, numbers = matched_table(grid, "qa", "sft", bootstrap_replicates(grid, "qa"), "toy", "toy")
    text = {row[0].text: row for row in table.rows}
    assert text["keeper"][2].text == "-0.500 [-0.500, -0.500]†"
    assert text["keeper"][-1].text == "better than sft at matched learning"
    assert text["half"][-1].text == "worse than sft at matched learning"
    assert text["edge"][2].text == "0.250" and text["edge"][-1].text.startswith("frontier too uncertain at this LA")
    assert text["idle"][2].text == "–" and text["idle"][-1].text.startswith("learns less than any frontier row")
    assert sorted(numbers["frontier"]) == ["sft", "sft-low"]
    out = tmp_path / "report"
    build_report([tmp_path / "exp"], out, figures=False)
    md = (out / "toy" / "tables" / "matched.md").read_text()
    assert "keeper" in md and "sft-low (LA 0.500, F 0.000, lr 0.001)" in (out / "toy" / "tables" / "notes.md").read_text()
    assert (out / "toy" / "tables" / "matched.tex").exists()


def test_no_frontier_no_table(tmp_path):
    write(tmp_path, "sft", rows(ALL, NONE, ALL))
    write(tmp_path, "keeper", rows(ALL, ALL, ALL), strategy={"name": "cms"})
    groups = groups_of(tmp_path)
    table, numbers = matched_table(groups, "qa", "sft", bootstrap_replicates(groups, "qa"), "toy", "toy")
    assert table is None and numbers["comparisons"] == []


def test_stability_plasticity_draws_the_frontier_it_is_given():
    from clbench.reporting.figures import stability_plasticity
    from clbench.reporting.looks import looks
    from clbench.reporting.stats import Estimate

    est = {lab: {"forgetting": Estimate(f, 0.01, 3), "learning_acc": Estimate(la, 0.01, 3)}
           for lab, f, la in (("sft", 0.9, 0.95), ("sft-low", 0.1, 0.5), ("sft-mid", 0.4, 0.8), ("cms", 0.5, 0.9))}
    lk = looks({lab: "sft" if lab.startswith("sft") else "cms" for lab in est})
    fig = stability_plasticity(est, {}, lk, "qa", frontier=["sft", "sft-low", "sft-mid"])
    lines = [ln for ln in fig.axes[0].lines if len(ln.get_xdata()) == 3]
    assert len(lines) == 1  # the frontier, through its three rows in order of LA (cms is not on it)
    assert list(lines[0].get_xdata()) == [0.1, 0.4, 0.9] and list(lines[0].get_ydata()) == [0.5, 0.8, 0.95]
    without = stability_plasticity(est, {}, lk, "qa")
    assert not [ln for ln in without.axes[0].lines if len(ln.get_xdata()) == 3]


def test_a_faster_rate_that_learns_less_is_cut_from_the_frontier(tmp_path):
    """sft at lr 0.1 learns less than at 0.01 (broken training, not a trade-off): it and every faster row
    leave the frontier, are named in the caption, and are compared like any other strategy."""
    write(tmp_path, "sft", rows(ALL, NONE, ALL))                                 # lr 0.01: LA 1
    write(tmp_path, "sft-low", rows(ALL, ALL, NONE), train={"lr": 0.001})        # LA 1/2
    write(tmp_path, "sft-hot", rows(NONE, NONE, NONE), train={"lr": 0.1})        # LA 0
    write(tmp_path, "sft-hotter", rows(ALL, NONE, ALL), train={"lr": 1.0})       # LA 1, after the cut
    write(tmp_path, "keeper", rows(ALL, ALL, ALL), strategy={"name": "cms"})
    groups = groups_of(tmp_path)
    table, numbers = matched_table(groups, "qa", "sft", bootstrap_replicates(groups, "qa"), "toy", "toy")
    assert sorted(numbers["frontier"]) == ["sft", "sft-low"]
    assert numbers["left_out_of_frontier"] == ["sft-hot", "sft-hotter"]
    assert "left out, as a higher rate learned less than a lower one: sft-hot, sft-hotter" in table.notes
    assert {row[0].text for row in table.rows} == {"keeper", "sft-hot", "sft-hotter"}


def test_a_faster_rate_that_learns_exactly_as_much_stays_on_the_frontier(tmp_path):
    """The cut is at *less* learning: sft at lr 0.1 learning exactly what sft at 0.01 learns (LA 1) stays,
    and the frontier at that LA is the mean of the two rows' F (0.5 and 0)."""
    write(tmp_path, "sft", rows(ALL, NONE, ALL))                              # lr 0.01: LA 1, F 0.5
    write(tmp_path, "sft-low", rows(ALL, ALL, NONE), train={"lr": 0.001})     # LA 1/2, F 0
    write(tmp_path, "sft-hot", rows(ALL, ALL, ALL), train={"lr": 0.1})        # LA 1, F 0
    write(tmp_path, "keeper", rows(ALL, ALL, ALL), strategy={"name": "cms"})  # LA 1, F 0
    groups = groups_of(tmp_path)
    front, dropped, comps = matched_comparisons(groups, "qa", "sft", bootstrap_replicates(groups, "qa"))
    assert front == ["sft-low", "sft", "sft-hot"] and dropped == []
    keeper = next(m for m in comps if m.strategy == "keeper" and m.metric == "forgetting")
    assert (keeper.frontier_value, keeper.delta) == pytest.approx((0.25, -0.25))


def test_the_bootstrap_p_value_is_two_sided(tmp_path):
    """Seeds 0 and 1 of 'mixed' forget 0 and 0.5 at LA 1, where the frontier forgets 0.5: ΔF is −0.5 on
    seed 0 and 0 on seed 1. Drawing two seeds, the replicate's ΔF is −0.5, −0.25 or 0 with probability
    1/4, 1/2, 1/4, so P(Δ ≥ 0) ≈ 1/4 and the two-sided p = 2·min(P(Δ ≤ 0), P(Δ ≥ 0)) ≈ 0.5 (one-sided:
    0.25), Holm-adjusted over the table's comparisons as statsmodels adjusts them."""
    from statsmodels.stats.multitest import multipletests

    write(tmp_path, "sft", rows(ALL, NONE, ALL))
    write(tmp_path, "sft-low", rows(ALL, ALL, NONE), train={"lr": 0.001})
    for seed, R in ((0, rows(ALL, ALL, ALL)), (1, rows(ALL, NONE, ALL))):
        d = write_item_run(tmp_path, "mixed", seed, R, BASE, REF)
        cfg = json.loads((d / "config.json").read_text())
        cfg["strategy"]["name"] = "cms"
        (d / "config.json").write_text(json.dumps(cfg))
    write(tmp_path, "half", rows(ALL, NONE, HALF), strategy={"name": "cms"})
    groups = groups_of(tmp_path)
    _, _, comps = matched_comparisons(groups, "qa", "sft", bootstrap_replicates(groups, "qa"))
    mixed = next(m for m in comps if m.strategy == "mixed" and m.metric == "forgetting")
    assert mixed.delta == pytest.approx(-0.25) and (mixed.low, mixed.high) == (-0.5, 0.0)
    assert 0.42 < mixed.p < 0.58
    ps = [m.p for m in comps if m.p is not None]
    assert [m.p_holm for m in comps if m.p is not None] == pytest.approx(list(multipletests(ps, method="holm")[1]))


def test_the_frontier_of_every_replicate_is_numpys_interpolation():
    """frontier_curve (all replicates at once) against numpy.interp on each replicate's points, bitwise:
    points of equal LA averaged, missing points left out, nothing outside the points' range."""
    from clbench.reporting.matched import frontier_curve

    rng = np.random.default_rng(0)
    P, B = 4, 4000
    la = rng.integers(0, 6, (P, B)) / 5  # coarse: ties are common
    f = rng.random((P, B))
    la[rng.random((P, B)) < 0.05] = np.nan
    x = rng.integers(-1, 13, B) / 10
    got = frontier_curve(la, f, x)
    for b in range(B):
        by: dict[float, list[float]] = {}
        for a, y in zip(la[:, b], f[:, b]):
            if np.isfinite(a):
                by.setdefault(float(a), []).append(float(y))
        xs = sorted(by)
        want = (np.interp(x[b], xs, [sum(by[a]) / len(by[a]) for a in xs])
                if len(xs) >= 2 and xs[0] <= x[b] <= xs[-1] else np.nan)
        assert got[b] == want or (np.isnan(want) and np.isnan(got[b])), (b, la[:, b], f[:, b], x[b])
    assert np.isfinite(got).sum() > B / 3 and np.isnan(got).sum() > B / 10  # both cases were exercised


def write_reversed(root, label, R, **config):
    """``write``, as the same label trained in the reversed task order (its runs in ``order-reversed``)."""
    for seed in (0, 1):
        d = write_item_run(root / "tmp-reversed", label, seed, R, BASE, REF)
        cfg = json.loads((d / "config.json").read_text())
        cfg["order"] = {"name": "reversed", "permutation": [0, 2, 1], "stream_tasks": cfg["stream"]["tasks"]}
        for section, values in config.items():
            cfg[section].update(values)
        (d / "config.json").write_text(json.dumps(cfg))
        target = root / "exp" / "toy" / label / "order-reversed" / f"seed_{seed}"
        target.parent.mkdir(parents=True, exist_ok=True)
        d.rename(target)


def test_a_row_in_another_task_order_is_matched_against_the_frontier_of_its_own_order(tmp_path):
    write(tmp_path, "sft", rows(ALL, NONE, ALL))                               # given: LA 1, F 0.5
    write(tmp_path, "sft-low", rows(ALL, ALL, NONE), train={"lr": 0.001})      # given: LA 1/2, F 0
    write_reversed(tmp_path, "sft", rows(ALL, ALL, ALL))                       # reversed: LA 1, F 0
    write_reversed(tmp_path, "sft-low", rows(ALL, ALL, NONE), train={"lr": 0.001})  # reversed: LA 1/2, F 0
    write_reversed(tmp_path, "half", rows(ALL, NONE, HALF), strategy={"name": "cms"})  # LA 3/4, F 0.5
    out = tmp_path / "report"
    build_report([tmp_path / "exp"], out, figures=False)
    given = json.loads((out / "toy" / "numbers.json").read_text())
    rev = json.loads((out / "toy-order-reversed" / "numbers.json").read_text())
    assert rev["reference"] == "sft @reversed"
    assert sorted(rev["tables"]["matched"]["frontier"]) == ["sft @reversed", "sft-low @reversed"]
    comp = {(c["strategy"], c["metric"]): c for c in rev["tables"]["matched"]["comparisons"]}
    # the reversed frontier forgets nothing at any LA: ΔF = 0.5 (against the given order's it would be 0.25)
    assert comp[("half @reversed", "forgetting")]["delta"] == pytest.approx(0.5)
    # the given order's section holds the given order's rows only, and the table that averages the orders
    assert sorted(given["tables"]["matched"]["frontier"]) == ["sft", "sft-low"]
    assert not any("@" in c["strategy"] for c in given["tables"]["matched"]["comparisons"])
    assert given["tables"]["orders"]["sft"]["forgetting"]["orders"] == {"given": 0.5, "reversed": 0.0}
    assert "orders" not in rev["tables"] or not rev["tables"]["orders"]
