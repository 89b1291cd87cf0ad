"""Golden files: the rendered Markdown and LaTeX summary tables of a fixed synthetic result set, byte
for byte. A change to how a table looks shows up here as a diff to review; regenerate on purpose with
``CLBENCH_UPDATE_GOLDEN=1 pytest tests/test_golden_tables.py`` and commit the new files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clbench.reporting.build import build_report
from tests.report_runs import make_run
from tests.test_report_tables import MATRICES, SEEDS

GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    for label, mats in MATRICES.items():
        for s in SEEDS:
            make_run(root, label, s, mats[s], cost={"updated_elements": 250_000} if label == "lazy" else {})
    out = tmp_path_factory.mktemp("report")
    build_report([root], out, figures=False)
    return out / "toy" / "tables"


@pytest.mark.parametrize("name", ["summary.md", "summary.tex"])
def test_rendered_table_equals_the_golden_file(tables, name):
    produced = (tables / name).read_text()
    golden = GOLDEN / name
    if os.environ.get("CLBENCH_UPDATE_GOLDEN"):
        golden.write_text(produced)
    assert produced == golden.read_text(), f"{name} differs from tests/golden/{name}"
