"""The report's timescale figure and table (clbench/reporting/timescales.py), built from stored runs chosen by hand.

As in tests/test_report_matched.py: the frontier is sft (LA 1, F 0.5) and sft-low (LA 1/2, F 0), so
F_frontier(LA) = LA − 1/2 on [1/2, 1]; items within a (seed, task) are alike (but HALF's), so intervals are
points where every score is 0 or 1.
"""

from __future__ import annotations

import json

import pytest

from clbench.reporting.bootstrap import bootstrap_replicates
from clbench.reporting.build import REFERENCE, build_report
from clbench.reporting.matched import matched_table
from clbench.reporting.timescales import sweep_point, timescale_figure, timescale_report
from tests.test_report_bootstrap import ALL, HALF, NONE, groups_of
from tests.test_report_latex import PDFLATEX, assert_fits_a_paper
from tests.test_report_matched import rows, write


@pytest.fixture
def sweep(tmp_path):
    write(tmp_path, "sft", rows(ALL, NONE, ALL))  # LA 1, F 0.5
    write(tmp_path, "sft-low", rows(ALL, ALL, NONE), train={"lr": 0.001})  # LA 1/2, F 0
    tiers = {"name": "layer_tiers"}
    write(tmp_path, "layer_tiers-P1", rows(ALL, NONE, ALL), strategy={**tiers, "options": {"frequencies": [1, 1, 1]}})
    write(tmp_path, "layer_tiers-P64", rows(ALL, HALF, ALL),  # LA 1, F 0.25: ΔF = −0.25
          strategy={**tiers, "options": {"frequencies": [1, 8, 64]}})
    write(tmp_path, "layer_tiers-Pinf", rows(NONE, NONE, NONE),  # LA 0: below the frontier
          strategy={**tiers, "options": {"frequencies": [1, "never", "never"]}})
    write(tmp_path, "layer_tiers-deep-P4", rows(ALL, ALL, ALL),  # LA 1, F 0: ΔF = −0.5
          strategy={**tiers, "options": {"order": "deep_fast", "frequencies": [1, 2, 4]}})
    write(tmp_path, "layer_tiers-P9", rows(ALL, ALL, ALL), strategy={"name": "cms", "options": {}})  # not layer_tiers
    return tmp_path


def test_a_sweep_point_is_read_from_the_label_and_the_stored_periods():
    cfg = {"strategy": {"name": "layer_tiers", "options": {"frequencies": [1, 13, 180]}}}
    assert sweep_point("layer_tiers-P180", cfg) == ("layer_tiers", 180, (1, 13, 180))
    assert sweep_point("layer_tiers-deep-P180", cfg) == ("layer_tiers-deep", 180, (1, 13, 180))
    assert sweep_point("layer_tiers-P999", cfg)[1] == 180  # P from the options, not the label
    # cms_local's points, and those stored before the local rule left cms (name: cms, update: local)
    for name in ("cms_local", "cms"):
        never = {"strategy": {"name": name, "options": {"chunk_sizes": [1, "never", "never"]}}}
        assert sweep_point("cms-local-Pinf", never) == ("cms-local", "never", (1, "never", "never"))
    assert sweep_point("cms-local-Pinf", {"strategy": {"name": "sft", "options": {"chunk_sizes": [1, 4]}}}) is None
    assert sweep_point("layer_tiers", cfg) is None and sweep_point("cms-memory-P4", cfg) is None


def test_table_figure_and_numbers_come_from_the_stored_runs(sweep, tmp_path):
    out = tmp_path / "report"
    build_report([sweep / "exp"], out)
    numbers = json.loads((out / "toy" / "numbers.json").read_text())["tables"]["timescales"]
    got = {n["label"]: (n["period"], n["learning_acc"], n["delta"], n["side"]) for n in numbers}
    assert got == {"layer_tiers-P1": (1, 1.0, pytest.approx(0.0), None),
                   "layer_tiers-P64": (64, 1.0, pytest.approx(-0.25), None),
                   "layer_tiers-Pinf": ("never", 0.0, None, "below"),
                   "layer_tiers-deep-P4": (4, 1.0, pytest.approx(-0.5), None)}
    assert [n["label"] for n in numbers] == ["layer_tiers-P1", "layer_tiers-P64", "layer_tiers-Pinf",
                                              "layer_tiers-deep-P4"]  # mechanism order, then P, ∞ last
    md = (out / "toy" / "tables" / "timescales.md").read_text()
    assert "| layer_tiers | 64 | [1, 8, 64] | 1.000 | -0.250 [-0.3" in md  # HALF's items vary: a real interval
    assert "| layer_tiers-deep | 4 | [1, 2, 4] | 1.000 | -0.500 [-0.500, -0.500]† | better than sft" in md
    assert "| layer_tiers | ∞ | [1, ∞, ∞] | 0.000 | – (LA below the frontier) |" in md
    notes = (out / "toy" / "tables" / "notes.md").read_text()  # the definitions: the caption is short
    assert "No comparison (LA outside the frontier's range): layer_tiers-Pinf." in notes
    if PDFLATEX:  # and the table fits a two-column paper
        assert_fits_a_paper(out / "toy" / "tables" / "timescales.tex", tmp_path)
    for ext in ("pdf", "png"):
        assert (out / "toy" / "figures" / f"timescales.{ext}").stat().st_size > 1000
    assert "timescales.png" in (out / "README.md").read_text()


def test_the_figure_plots_the_tables_numbers_with_infinity_as_its_own_tick(sweep):
    groups = groups_of(sweep / "exp")
    _, numbers = matched_table(groups, "qa", REFERENCE, bootstrap_replicates(groups, "qa"), "toy", "toy")
    points, _, span = timescale_report(groups, "qa", REFERENCE, numbers, "toy", "toy")
    assert span == (0.5, 1.0)
    fig = timescale_figure(points, span, "qa")
    upper, lower = fig.axes[:2]
    assert [t.get_text() for t in lower.get_xticklabels()] == ["1", "4", "64", "∞"]
    drawn = sorted(round(float(y), 6) for line in lower.get_lines() for y in line.get_ydata()
                   if line.get_linestyle() != "--" and len(line.get_ydata()) > 0)
    assert drawn == [-0.5, -0.25, 0.0]  # every ΔF of the table, nothing for the point outside the frontier
    la = [line.get_ydata() for line in upper.get_lines()]
    assert any(list(map(float, y)) == [1.0, 1.0, 0.0] for y in la)  # layer_tiers' LA at P = 1, 64, ∞
