"""Forgetting against the KL from the base model in the report (clbench/reporting/kl_forgetting.py), from
stored runs whose F and final KL are chosen by hand."""

from __future__ import annotations

import json

import pytest

from clbench.reporting.build import build_report
from tests.report_runs import make_run
from tests.test_report_latex import PDFLATEX, assert_fits_a_paper


def run_with(root, label, seed, f, kl, strategy="sft", options=None):
    """A run whose medical score falls from 1 to 1 − f (so F = f) and whose last row has KL ``kl``."""
    d = make_run(root, label, seed, [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0 - f, 1.0]], strategy=strategy,
                 options=options)
    last = d / "eval" / "after_2.json"
    row = json.loads(last.read_text())
    if kl is not None:
        row["kl"] = {"kl_base": kl, "kl_texts": 4, "kl_tokens": 40}
    last.write_text(json.dumps(row))
    return d


def test_the_kl_table_figure_and_correlations_come_from_the_stored_rows(tmp_path):
    for seed, (f, kl) in enumerate([(0.1, 0.05), (0.2, 0.10), (0.4, 0.20)]):  # F = 2 KL: r = ρ = 1
        run_with(tmp_path, "sft", seed, f, kl)
    run_with(tmp_path, "sft-lr1e-3", 0, 0.3, 0.15, options={})  # same mechanism, another label: still on the line
    for seed, (f, kl) in enumerate([(0.5, 0.1), (0.3, 0.2), (0.2, 0.4)]):  # falling, not linear: ρ = −1, −1 < r < 0
        run_with(tmp_path, "layer_tiers-P4", seed, f, kl, strategy="layer_tiers")
    run_with(tmp_path, "sft-full", 0, 0.9, 1.0, options={"mode": "full"})  # its own mechanism, one run: no r
    run_with(tmp_path, "olora", 0, 0.5, None, strategy="olora")  # no KL stored: not a point
    out = tmp_path / "report"
    build_report([tmp_path / "exp"], out)
    numbers = json.loads((out / "toy" / "numbers.json").read_text())["tables"]["kl"]
    assert len(numbers["points"]) == 8
    corr = {c["mechanism"]: c for c in numbers["correlations"]}
    assert corr["sft"]["runs"] == 4 and corr["sft"]["pearson"] == pytest.approx(1.0)
    assert corr["sft"]["spearman"] == pytest.approx(1.0)
    tiers = corr["layer_tiers"]
    assert tiers["spearman"] == pytest.approx(-1.0) and -1.0 < tiers["pearson"] < -0.5
    assert tiers["low"] <= tiers["pearson"] <= tiers["high"]
    assert corr["sft (full)"]["runs"] == 1 and corr["sft (full)"]["pearson"] is None
    assert corr["all runs"]["runs"] == 8
    md = (out / "toy" / "tables" / "kl.md").read_text()
    assert "| sft | 4 | 1.00 [" in md and "| sft (full) | 1 | – | – |" in md
    assert "Fisher z" in (out / "toy" / "tables" / "notes.md").read_text()  # the definitions: the caption is short
    if PDFLATEX:  # and the table fits a two-column paper
        assert_fits_a_paper(out / "toy" / "tables" / "kl.tex", tmp_path)
    assert (out / "toy" / "figures" / "kl-forgetting.png").stat().st_size > 1000


def test_no_kl_no_table(tmp_path):
    for seed in range(3):
        run_with(tmp_path, "sft", seed, 0.1 * seed, None)
    out = tmp_path / "report"
    build_report([tmp_path / "exp"], out, figures=False)
    assert not (out / "toy" / "tables" / "kl.md").exists()
