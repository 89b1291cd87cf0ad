"""End to end on a real micro grid: ``clbench run`` trains two labels × two seeds and ends with the
report; ``clbench report`` rebuilds it from the stored files alone, with the same tables."""

from __future__ import annotations

import json
import math

import pytest

from clbench.cli import main
from tests.conftest import MICRO_MODEL, MICRO_TRAIN

STRATEGIES = "[{name: sft, label: sft}, {name: sft, label: sft-r4, options: {lora: {rank: 4}}}]"


def test_run_ends_with_the_report_and_report_rebuilds_it(micro_cache, micro_base_dir, tmp_path, capsys):
    sets = [f"model.{k}={v}" for k, v in MICRO_MODEL.items()] + [f"train.{k}={v}" for k, v in MICRO_TRAIN.items()]
    sets += [f"cache_dir={micro_cache}", f"strategies={STRATEGIES}"]
    argv = ["run", "--stream", "micro", "--seeds", "0,1", "--name", "e2e", "--results", str(tmp_path / "results"),
            "--report-dir", str(tmp_path / "report"), "--quiet"]
    assert main(argv + [a for s in sets for a in ("--set", s)]) == 0
    out = capsys.readouterr().out
    assert "**Summary.**" in out and "| sft-r4 | 2 |" in out  # the summary table is printed

    report = tmp_path / "report"
    readme = (report / "README.md").read_text()
    runs = sorted((tmp_path / "results" / "e2e" / "micro").glob("*/seed_*"))
    assert len(runs) == 4
    prov = json.loads((runs[0] / "provenance.json").read_text())
    commit = prov["git"]["commit"]
    assert (f"`{commit}`" if commit else "not from a git checkout") in readme
    assert f"torch {prov['packages']['torch']}" in readme
    assert "seeds 0, 1 (n = 2)" in readme and "hidden_size=32" in readme and "steps_per_task=6" in readme
    assert "ACC = (1/T) Σ_j R[T,j]" in readme  # the formulas, quoted from clbench/results/metrics.py
    for run in runs:
        assert f"`{run}`" in readme

    # per-task table = seed mean of the last row of each stored matrix
    per_task = (report / "micro" / "tables" / "per_task.md").read_text().splitlines()
    for label in ("sft", "sft-r4"):
        mats = [json.loads((tmp_path / "results" / "e2e" / "micro" / label / f"seed_{s}" / "matrix.json").read_text())
                for s in (0, 1)]
        finals = [m["suites"]["qa"]["R"][-1] for m in mats]
        row = next(line for line in per_task if line.startswith(f"| {label} |")).strip("|").split(" | ")
        for j in range(3):
            mean = sum(f[j] for f in finals) / 2
            shown = row[2 + j].strip().strip("*†").split(" ± ")[0]
            assert math.isclose(float(shown), mean, abs_tol=5e-4), (label, j, shown, mean)

    # the second interval: rebuilt from every run's per-item predictions, which reproduce its metrics
    from clbench.reporting.bootstrap import load_suite_items, point_estimate
    from clbench.results.aggregate import load_runs

    for run in load_runs([tmp_path / "results"]):
        for suite in ("qa", "mc", "ppl"):
            items = load_suite_items(run, suite)
            assert items is not None, (run.path, suite)
            got, stored = point_estimate(items), run.suite(suite)
            for key in ("acc", "bwt", "fwt", "forgetting", "learning_acc", "general_retention"):
                assert got[key] == (None if stored[key] is None else pytest.approx(stored[key])), key
    numbers = json.loads((report / "micro" / "numbers.json").read_text())["tables"]
    acc = {c["strategy"]: c for c in numbers["summary"] if c["column"] == "acc"}
    assert acc["sft"]["bootstrap"]["replicates"] == 1000 and acc["sft"]["bootstrap"]["diff_vs_reference"] is None
    assert acc["sft-r4"]["bootstrap"]["diff_vs_reference"]["low"] <= acc["sft-r4"]["bootstrap"]["diff_vs_reference"]["high"]
    assert all(c["bootstrap"] is not None for c in numbers["per_task"])

    figures = sorted(p.name for p in (report / "micro" / "figures").iterdir())
    assert figures == sorted(f"{stem}.{ext}" for ext in ("pdf", "png") for stem in (
        "cost-forgetting", "kl-forgetting", "loss", "matrix-sft", "matrix-sft-r4", "retention", "stability-plasticity"))
    assert all((report / "micro" / "figures" / f).stat().st_size > 1000 for f in figures)

    assert main(["report", str(tmp_path / "results"), "-o", str(tmp_path / "again"), "--no-figures"]) == 0
    for name in ("summary", "cost", "per_task"):
        for ext in ("md", "tex"):
            rel = f"micro/tables/{name}.{ext}"
            assert (report / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes(), rel
