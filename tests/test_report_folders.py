"""Two results folders reported together (before/after a change, two machines): a label both folders ran
with one seed is shown once per folder, ``<label> [<tag>]``, side by side; the reference is the first
folder's row; folders that share no (stream, label, seed) report exactly as their runs in one folder do."""

from __future__ import annotations

import json

import pytest

from clbench.reporting.build import build_report
from clbench.reporting.matched import frontier_labels
from clbench.results.aggregate import folder_tags, group_runs, load_runs, runs_frame
from tests.report_runs import make_run

# final rows differ between the folders: ACC of A's sft is (.5 + .3 + .9) / 3, of B's (.7 + .6 + .8) / 3
R_A = {0: [[.8, 0, 0], [.6, .9, 0], [.5, .3, .9]], 1: [[.8, 0, 0], [.7, .8, .1], [.6, .4, 1.0]]}
R_B = {0: [[.8, 0, 0], [.7, .9, 0], [.7, .6, .8]], 1: [[.8, 0, 0], [.8, .9, .1], [.8, .7, .9]]}
R_LOW = [[.8, 0, 0], [.8, .5, 0], [.7, .4, .5]]  # sft at a lower learning rate: learns less, forgets less


def _before_after(root):
    """``before``: sft, sft-low (its lr row) and replay; ``after``: sft and sft-low with other matrices."""
    for seed in (0, 1):
        make_run(root / "before", "sft", seed, R_A[seed])
        make_run(root / "before", "sft-low", seed, R_LOW, train={"lr": 0.001})
        make_run(root / "before", "replay", seed, R_A[1 - seed], strategy="replay")
        make_run(root / "after", "sft", seed, R_B[seed])
        make_run(root / "after", "sft-low", seed, R_B[seed], train={"lr": 0.001})
    return root / "before", root / "after"


def _summary_numbers(report, label, column="acc"):
    numbers = json.loads((report / "toy" / "numbers.json").read_text())
    return next(c for c in numbers["tables"]["summary"] if c["strategy"] == label and c["column"] == column)


def _row(report, stem, label):
    lines = (report / "toy" / "tables" / f"{stem}.md").read_text().splitlines()
    return [line for line in lines if line.startswith(f"| {label} |")]


def test_a_label_both_folders_ran_is_shown_once_per_folder_with_each_folders_values(tmp_path):
    before, after = _before_after(tmp_path)
    report = tmp_path / "report"
    build_report([before, after], report, figures=False)
    for label, R in (("sft [before]", R_A), ("sft [after]", R_B)):
        acc = _summary_numbers(report, label)
        assert acc["seeds"] == {str(s): pytest.approx(sum(R[s][-1]) / 3) for s in (0, 1)}, label
        assert len(_row(report, "summary", label)) == 1 and len(_row(report, "per_task", label)) == 1
        per_task = json.loads((report / "toy" / "numbers.json").read_text())["tables"]["per_task"]
        seeds = {c["column"]: c["seeds"] for c in per_task if c["strategy"] == label}
        assert seeds["final:notes"] == {str(s): pytest.approx(R[s][-1][2]) for s in (0, 1)}, label
    # a label only one folder ran keeps its name; no plain sft row is left
    assert len(_row(report, "summary", "replay")) == 1 and not _row(report, "summary", "sft")
    for label in ("sft-low [before]", "sft-low [after]"):
        assert len(_row(report, "summary", label)) == 1
    readme = (report / "README.md").read_text()
    assert "`sft [before]` on `toy`" in readme and "`sft [after]`: strategy `sft`" in readme


def test_the_reference_is_the_first_folders_row_and_its_frontier_that_folders_lr_rows(tmp_path):
    before, after = _before_after(tmp_path)
    report = tmp_path / "report"
    build_report([before, after], report, figures=False)
    numbers = json.loads((report / "toy" / "numbers.json").read_text())
    assert numbers["reference"] == "sft [before]"
    # the after folder's sft is tested against the before folder's, seed by seed
    assert _summary_numbers(report, "sft [after]")["pairs"] == 2
    assert _summary_numbers(report, "sft [before]")["p_vs_reference"] is None
    assert "sft [before]" in (report / "toy" / "tables" / "summary.md").read_text().split("\n\n")[0]
    assert sorted(numbers["tables"]["matched"]["frontier"]) == ["sft [before]", "sft-low [before]"]
    rows = [line.split(" | ")[0] for line in (report / "toy" / "tables" / "summary.md").read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| Strategy")]
    assert rows[0] == "| sft [before]"  # the reference row first, as sft is with one folder
    # given the other way round, the other folder is the reference
    build_report([after, before], tmp_path / "swapped", figures=False)
    swapped = json.loads((tmp_path / "swapped" / "toy" / "numbers.json").read_text())
    assert swapped["reference"] == "sft [after]"
    groups = {lab: runs for (_, lab), runs in group_runs(load_runs([after, before])).items()}
    assert sorted(frontier_labels(groups, "sft [after]")) == ["sft [after]", "sft-low [after]"]


def test_folders_sharing_no_label_and_seed_report_as_their_runs_in_one_folder(tmp_path):
    # seed 0 in one folder, seed 1 in the other: pooled into one sft row, as from one folder
    for seed in (0, 1):
        make_run(tmp_path / f"part{seed}", "sft", seed, R_A[seed])
        make_run(tmp_path / "one", "sft", seed, R_A[seed])
    make_run(tmp_path / "part1", "replay", 0, R_B[0], strategy="replay")
    make_run(tmp_path / "one", "replay", 0, R_B[0], strategy="replay")
    build_report([tmp_path / "part0", tmp_path / "part1"], tmp_path / "two", figures=False)
    build_report([tmp_path / "one"], tmp_path / "single", figures=False)
    tables = sorted(p.relative_to(tmp_path / "single") for p in (tmp_path / "single").rglob("*/tables/*"))
    assert len(tables) >= 8
    for rel in tables:
        assert (tmp_path / "two" / rel).read_bytes() == (tmp_path / "single" / rel).read_bytes(), rel
    numbers = [json.loads((tmp_path / d / "toy" / "numbers.json").read_text()) for d in ("two", "single")]
    assert numbers[0] == numbers[1] and numbers[1]["reference"] == "sft"
    assert "shown once per folder" not in (tmp_path / "two" / "README.md").read_text()
    # the same folder given twice is one folder
    build_report([tmp_path / "one", tmp_path / "one"], tmp_path / "twice", figures=False)
    for rel in tables:
        assert (tmp_path / "twice" / rel).read_bytes() == (tmp_path / "single" / rel).read_bytes(), rel


def test_tags_are_the_shortest_trailing_parts_no_other_folder_ends_with(tmp_path):
    a, b, c = tmp_path / "runs" / "a" / "bench", tmp_path / "runs" / "b" / "bench", tmp_path / "other"
    assert list(folder_tags([a, b, c]).values()) == ["a/bench", "b/bench", "other"]
    assert list(folder_tags([str(c), c]).values()) == ["other"]


def test_runs_frame_of_several_folders_has_the_folder_column(tmp_path):
    before, after = _before_after(tmp_path)
    df = runs_frame([before, after])
    assert list(df.columns[:3]) == ["experiment", "folder", "stream"]
    by_path = dict(zip(df["path"], df["folder"]))
    assert {p: f for p, f in by_path.items()} == {
        str(p): ("before" if before in p.parents else "after") for p in load_and_list(before, after)}
    sft = df[df.strategy.str.startswith("sft [")]
    assert sorted(zip(sft.strategy, sft.seed, sft.folder)) == [
        ("sft [after]", 0, "after"), ("sft [after]", 1, "after"), ("sft [before]", 0, "before"),
        ("sft [before]", 1, "before")]
    acc = dict(zip(zip(sft.folder, sft.seed), sft.acc))
    assert acc == {("before", s): pytest.approx(sum(R_A[s][-1]) / 3) for s in (0, 1)} | {
        ("after", s): pytest.approx(sum(R_B[s][-1]) / 3) for s in (0, 1)}
    assert set(df[df.strategy == "replay"].folder) == {"before"}
    assert "folder" not in runs_frame(before).columns  # one folder: the columns of before


def load_and_list(*folders):
    return [p.parent for f in folders for p in f.rglob("DONE")]
