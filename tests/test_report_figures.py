"""Report figures on synthetic result sets: every figure written (PDF and PNG, non-empty, the same
bytes twice), and tier diagnostics read defensively (within-task or global steps, malformed data)."""

from __future__ import annotations

import re

import pytest

from clbench.reporting.build import build_report
from clbench.reporting.tier_data import global_steps, parse_tiers, tier_data
from clbench.results.aggregate import group_runs, load_runs
from tests.report_runs import make_run

R = {0: [[.8, 0, 0], [.6, .9, 0], [.5, .3, .9]], 1: [[.8, 0, 0], [.7, .8, .1], [.6, .4, 1.0]]}


def tiers(steps0, steps1, drift0, drift1):
    """The object clbench.train.tiers.updater.TieredUpdater stores (its list one level down), trimmed."""
    return {"tiers": {"frequencies": [1, 2], "tiers": [
        {"tier": 0, "frequency": 1, "updates": len(steps0), "steps": steps0, "drift": drift0},
        {"tier": 1, "frequency": 2, "updates": len(steps1), "steps": steps1, "drift": drift1}]}}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    for seed in (0, 1):
        make_run(root, "sft", seed, R[seed])
        # frequencies [1, 2] over 4 steps a task: task 1 reports steps within the task, task 2 global
        # steps of the whole run so far (both shapes are accepted)
        make_run(root, "tiered", seed, R[seed], diagnostics={
            1: tiers([1, 2, 3, 4], [2, 4], 0.5 + seed, 0.1),
            2: tiers(list(range(1, 9)), [2, 4, 6, 8], 0.7, 0.2 + seed)})
        make_run(root, "drift-only", seed, R[seed], diagnostics={1: {"tiers": [{"drift": 1.0}, {"drift": 2.0}]}})
        make_run(root, "broken", seed, R[seed], diagnostics={1: {"tiers": "abc"}, 2: {"tiers": [1, 2]}})
    return root


def test_tier_steps_within_the_task_or_global_become_global():
    assert global_steps([1, 2, 4], 5, 8) == [5, 6, 8]  # within task 2 (global steps 5..8)
    assert global_steps([2, 4, 6, 8], 5, 8) == [6, 8]  # global and cumulative: cut to the task
    assert global_steps([2, 4], 1, 4) == [2, 4]  # the first task: both readings agree


def test_malformed_tier_diagnostics_are_skipped():
    assert parse_tiers({}) is None and parse_tiers({"tiers": "abc"}) is None and parse_tiers({"tiers": [1]}) is None
    assert parse_tiers({"tiers": [{"steps": "x", "drift": "y"}]}) == [{"steps": None, "drift": None, "frequency": None}]
    assert parse_tiers([]) is None and parse_tiers({"tiers": {"tiers": []}}) is None  # tier map not ready yet
    assert parse_tiers({"tiers": [{"steps": [2], "drift": 1, "frequency": 2}]}) == [
        {"steps": [2], "drift": 1.0, "frequency": 2}]  # the plain list shape


def test_tier_data_from_stored_diagnostics(results):
    groups = {lab: runs for (_, lab), runs in group_runs(load_runs([results])).items()}
    data = tier_data(groups["tiered"])
    assert data["timeline"] == [[1, 2, 3, 4, 5, 6, 7, 8], [2, 4, 6, 8]]  # seed 0
    assert data["timeline_seed"] == 0 and data["tasks"] == ["medical", "notes"] and data["starts"] == [1, 5]
    assert data["frequencies"] == [1, 2] and data["end"] == 8
    drift = [[(e.mean, e.n) for e in row] for row in data["drift"]]
    assert drift == [[(1.0, 2), (pytest.approx(0.1), 2)], [(pytest.approx(0.7), 2), (pytest.approx(0.7), 2)]]
    assert tier_data(groups["drift-only"])["timeline"] is None
    assert tier_data(groups["broken"]) is None and tier_data(groups["sft"]) is None


def test_every_figure_is_written_non_empty_and_reproducible(results, tmp_path):
    readme = build_report([results], tmp_path / "a").read_text()
    figures = tmp_path / "a" / "toy" / "figures"
    stems = sorted(p.stem for p in figures.glob("*.pdf"))
    assert stems == ["cost-forgetting", "loss", "matrix-broken", "matrix-drift-only", "matrix-sft", "matrix-tiered",
                     "retention", "stability-plasticity", "tiers-drift-only", "tiers-tiered"]
    for stem in stems:
        pdf, png = (figures / f"{stem}.pdf").read_bytes(), (figures / f"{stem}.png").read_bytes()
        assert pdf.startswith(b"%PDF") and len(pdf) > 1000, stem
        assert png.startswith(b"\x89PNG") and len(png) > 1000, stem
        assert f"](toy/figures/{stem}.png)" in readme and f"(toy/figures/{stem}.pdf)" in readme
    html = (tmp_path / "a" / "index.html").read_text()
    assert sorted(re.findall(r'<img src="toy/figures/([^"]+)\.png"', html)) == stems
    build_report([results], tmp_path / "b")
    for p in sorted(figures.iterdir()):
        assert p.read_bytes() == (tmp_path / "b" / "toy" / "figures" / p.name).read_bytes(), p.name


def test_intervals_are_clipped_to_the_metric_range_on_stored_results(tmp_path):
    """Two seeds learning 1.0 and 0.8: LA 0.9 ± 12.71·0.141/√2 = 0.9 ± 1.27, which would reach 2.17. The
    plane's error bar and the retention bands stop at 1 (and at 0 below), and the captions say so."""
    from clbench.reporting.figures import retention_curves, stability_plasticity
    from clbench.reporting.looks import looks
    from clbench.reporting.stats import mean_ci

    for seed, x in ((0, 1.0), (1, 0.8)):
        make_run(tmp_path / "res", "sft", seed, [[.8, 0, 0], [.6, x, 0], [.5, .3, x]])
    groups = {lab: runs for (_, lab), runs in group_runs(load_runs([tmp_path / "res"])).items()}
    est = {"sft": {k: mean_ci(r.suite("qa")[k] for r in groups["sft"]) for k in ("forgetting", "learning_acc")}}
    la = est["sft"]["learning_acc"]
    assert la.mean == pytest.approx(0.9) and la.high > 2.0 and la.low < -0.3  # the unclipped t interval
    looks_ = looks({"sft": "sft"}, "sft")

    fig = stability_plasticity(est, {"sft": True}, looks_, "qa", True, (), unit=True)
    bars = [seg for c in fig.axes[0].containers for col in c.lines[2] for seg in col.get_segments()]
    ys = [y for seg in bars for _, y in seg]
    assert max(ys) == pytest.approx(1.0) and min(ys) == pytest.approx(0.0)  # LA clipped to [0, 1]
    xs = [x for seg in bars for x, _ in seg]
    assert min(xs) >= -1.0 and max(xs) <= 1.0  # forgetting to [−1, 1]

    fig = retention_curves(groups, "qa", looks_, unit=True)
    bands = [v for ax in fig.axes for coll in ax.collections for path in coll.get_paths() for v in path.vertices[:, 1]]
    assert bands and max(bands) <= 1.0 + 1e-9 and min(bands) >= -1e-9

    readme = build_report([tmp_path / "res"], tmp_path / "rep").read_text()
    assert readme.count("clipped to the metric's range (scores to [0, 1], forgetting to [−1, 1]") >= 3
