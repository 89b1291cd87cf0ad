"""Report tables against hand computation on synthetic result sets: numbers, CI half-widths, bold,
significance marks, Pareto flags, LaTeX structure, determinism, and refusal of mixed groups."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess

import pytest

from clbench.errors import ConfigError
from clbench.reporting.build import build_report
from tests.report_runs import make_run

SEEDS = (0, 1, 2)
SFT = {0: [[.8, 0, 0], [.6, .9, 0], [.5, .3, .9]],
       1: [[.8, 0, 0], [.7, .9, .1], [.6, .4, 1.0]],
       2: [[.8, 0, 0], [.6, 1.0, 0], [.4, .2, .9]]}


def with_last(R, general_delta, medical_delta):
    return [R[0], R[1], [R[2][0] + general_delta, R[2][1] + medical_delta, R[2][2]]]


# good keeps more of the earlier tasks on every seed (by different amounts), same learning
GOOD = {s: with_last(SFT[s], g, m) for s, g, m in ((0, .2, .5), (1, .25, .45), (2, .2, .55))}
# noisy is better on one seed and worse on another: no significant difference
NOISY = {s: with_last(SFT[s], 0, m) for s, m in ((0, .3), (1, -.3), (2, .1))}
# lazy barely learns, so it barely forgets
LAZY = {s: [[.8, 0, 0], [.8, .3, 0], [.8, .3, .3 + .01 * s]] for s in SEEDS}
MATRICES = {"sft": SFT, "good": GOOD, "noisy": NOISY, "lazy": LAZY}


def t975(dof: int) -> float:
    """Student t 0.975 quantile in closed form for 1 and 2 degrees of freedom."""
    return {1: math.tan(math.pi * 0.475), 2: 0.95 / math.sqrt(2 * 0.975 * 0.025)}[dof]


def acc(R):
    return sum(R[-1]) / len(R)


def forgetting(R):
    T = len(R)
    return sum(max(R[l][j] for l in range(T - 1)) - R[T - 1][j] for j in range(T - 1)) / (T - 1)


def learning_acc(R):  # over the trained tasks: task 0 (general) is pretrained
    return sum(R[j][j] for j in range(1, len(R))) / (len(R) - 1)


def cell(mean_values) -> str:
    n = len(mean_values)
    mean = sum(mean_values) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in mean_values) / (n - 1))
    return f"{mean:.3f} ± {t975(n - 1) * sd / math.sqrt(n):.3f}"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    for label, mats in MATRICES.items():
        for s in SEEDS:
            cost = {"updated_elements": 250_000} if label == "lazy" else {}
            make_run(root, label, s, mats[s], cost=cost)
    return root


@pytest.fixture(scope="module")
def report(results, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    build_report([results], out, figures=False)  # figures: tests/test_report_figures.py
    return out


def md_rows(path) -> dict[str, list[str]]:
    """``{strategy: cells}`` of a Markdown table file (header row included under 'Strategy')."""
    rows = {}
    for line in path.read_text().splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows[cells[0]] = cells
    return rows


def notes_of(report, table: str, stream: str = "toy") -> str:
    """The paragraph of ``table`` in the stream's ``tables/notes.md``."""
    text = (report / stream / "tables" / "notes.md").read_text()
    return next(p for p in text.split("\n\n") if p.startswith(f"**{table}**"))


def test_summary_numbers_match_hand_computation(report):
    rows = md_rows(report / "toy" / "tables" / "summary.md")
    header = rows["Strategy"]
    assert header[:2] == ["Strategy", "n"] and header[-1] == "Pareto"
    col = {name.split()[0]: i for i, name in enumerate(header)}
    for label, mats in MATRICES.items():
        Rs = [mats[s] for s in SEEDS]
        assert rows[label][1] == "3"
        assert rows[label][col["ACC"]].strip("*†") == cell([acc(R) for R in Rs])
        assert rows[label][col["F"]].strip("*†") == cell([forgetting(R) for R in Rs])
        assert rows[label][col["LA"]].strip("*†") == cell([learning_acc(R) for R in Rs])
    # the base row is the first row here, so general retention = final general score − 0.8
    assert rows["good"][col["GR"]].strip("*†") == cell([GOOD[s][2][0] - 0.8 for s in SEEDS])
    # by hand: seeds 0.567, 0.667, 0.500 → mean 0.578, sd 0.0839, half-width 4.303 · 0.0839 / √3 = 0.208
    assert rows["sft"][col["ACC"]] == "0.578 ± 0.208"


def test_bold_marks_the_best_value_in_each_direction(report):
    rows = md_rows(report / "toy" / "tables" / "summary.md")
    col = {name.split()[0]: i for i, name in enumerate(rows["Strategy"])}
    bold = {c: sorted(lab for lab in MATRICES if rows[lab][col[c]].startswith("**")) for c in col if c not in
            ("Strategy", "n", "Pareto")}
    assert bold["ACC"] == ["good"]  # highest final average
    assert bold["F"] == ["lazy"]  # lowest forgetting (lower is better)
    assert bold["LA"] == ["good", "noisy", "sft"]  # tied at the shown rounding: all bold


def test_significance_mark_is_a_paired_test_against_sft(report):
    rows = md_rows(report / "toy" / "tables" / "summary.md")
    col = {name.split()[0]: i for i, name in enumerate(rows["Strategy"])}
    acc_col = col["ACC"]
    assert rows["good"][acc_col].endswith("†")  # better on every seed: p ≈ 0.0005
    assert not rows["noisy"][acc_col].endswith("†")  # +0.1, −0.1, +0.03: p ≈ 0.7
    assert not any(c.endswith("†") for c in rows["sft"])  # the reference is never marked
    cost = md_rows(report / "toy" / "tables" / "cost.md")
    upd = next(i for i, h in enumerate(cost["Strategy"]) if h.startswith("Updated elements"))
    assert cost["Strategy"][upd] == "Updated elements (M) ↓"
    # 250k on every seed vs 1M: a difference identical on every seed cannot be tested, so no mark
    assert cost["lazy"][upd] == "**0.25 ± 0.00**"
    assert cost["sft"][upd] == "1.00 ± 0.00"
    caption = (report / "toy" / "tables" / "summary.md").read_text().split("\n")[0]
    assert "n = 3 seeds" in caption and "†: differs from sft (Holm-adjusted p < 0.05)" in caption
    notes = notes_of(report, "Summary")  # the definitions the short caption leaves out
    assert "paired t-test" in notes and "Student t" in notes and "Holm–Bonferroni-adjusted p < 0.05" in notes
    assert "identical on every seed cannot be tested" in notes_of(report, "Cost")
    numbers = json.loads((report / "toy" / "numbers.json").read_text())["tables"]
    lazy_upd = next(c for c in numbers["cost"] if c["strategy"] == "lazy" and c["column"] == "updated_elements")
    assert lazy_upd["p_vs_reference"] is None and lazy_upd["no_test"].startswith("no test possible")


def test_holm_adjusts_over_every_comparison_in_the_table(report):
    """The mark follows the Holm-adjusted p over all the table's comparisons, not the raw p."""
    from clbench.reporting.stats import holm

    numbers = json.loads((report / "toy" / "numbers.json").read_text())["tables"]["summary"]
    tested = [c for c in numbers if c["p_vs_reference"] is not None]
    assert len(tested) > 1
    want = holm([c["p_vs_reference"] for c in tested])
    assert [c["p_holm"] for c in tested] == pytest.approx(want)
    rows = md_rows(report / "toy" / "tables" / "summary.md")
    col = {name.split()[0]: i for i, name in enumerate(rows["Strategy"])}
    key_col = {"acc": "ACC", "bwt": "BWT", "fwt_base": "FWT", "forgetting": "F", "learning_acc": "LA",
               "general_retention": "GR"}
    for c in tested:
        assert rows[c["strategy"]][col[key_col[c["column"]]]].endswith("†") == (c["p_holm"] < 0.05), c
    # at least one comparison is significant raw but not after the adjustment (else the test shows nothing)
    assert any(c["p_vs_reference"] < 0.05 <= c["p_holm"] for c in tested)


def test_pareto_flag_counts_forgetting_less_only_without_learning_less(report):
    rows = md_rows(report / "toy" / "tables" / "summary.md")
    flags = {lab: rows[lab][-1] for lab in MATRICES}
    # good forgets less than sft at the same learning accuracy: sft and noisy are dominated; lazy
    # forgets least but learns least, so nothing beats it on both axes
    assert flags == {"sft": "", "good": "★", "noisy": "", "lazy": "★"}


def test_per_task_table_is_the_last_row_of_R(report):
    rows = md_rows(report / "toy" / "tables" / "per_task.md")
    assert rows["Strategy"][2:] == ["general (pre.) ↑", "medical ↑", "notes ↑"]
    for label, mats in MATRICES.items():
        for j in range(3):
            assert rows[label][2 + j].strip("*†") == cell([mats[s][2][j] for s in SEEDS])
    assert rows["good"][3] == "**" + cell([GOOD[s][2][1] for s in SEEDS]) + "**†"


def check_booktabs(tex: str) -> None:
    """Balanced braces and math, one top/mid/bottom rule in order, the same & count on every row."""
    body = re.sub(r"\\[{}$&%]", "", tex)
    depth = 0
    for ch in body:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0, "a } closes nothing"
    assert depth == 0, "unbalanced braces"
    lines = tex.splitlines()
    floats = lines.count("\\toprule")
    assert floats >= 1
    for rule in ("\\toprule", "\\midrule", "\\bottomrule"):
        assert lines.count(rule) == floats, rule
    tops, mids, bottoms = ([i for i, line in enumerate(lines) if line == r] for r in ("\\toprule", "\\midrule",
                                                                                       "\\bottomrule"))
    specs = re.findall(r"\\begin\{tabular\}\{([lrc]+)\}", tex)
    assert len(specs) == floats, "no tabular column spec"
    for top, mid, bottom, spec in zip(tops, mids, bottoms, specs):
        assert top < mid < bottom
        rows = lines[top + 1:mid] + lines[mid + 1:bottom]
        assert rows, "no rows"
        for row in rows:
            assert row.endswith("\\\\")
            cells = re.sub(r"\\begin\{tabular\}.*?\\end\{tabular\}", "header", row)  # a header on two lines
            assert len(re.findall(r"(?<!\\)&", cells)) == len(spec) - 1, row
            assert len(re.findall(r"(?<!\\)\$", row)) % 2 == 0, row
    env = re.search(r"\\begin\{(table\*?)\}", tex).group(1)
    assert tex.rstrip().endswith(f"\\end{{{env}}}")
    # every math fragment (cells, arrows, marks) parses as TeX math: matplotlib's mathtext stands in for
    # the math part of a TeX engine where none is installed
    from matplotlib.mathtext import MathTextParser

    parser = MathTextParser("path")
    fragments = re.findall(r"(?<!\\)\$(.+?)(?<!\\)\$", tex)
    assert fragments
    for fragment in fragments:
        parser.parse(f"${fragment}$")


def test_latex_tables_parse_as_balanced_booktabs(report):
    for name in ("summary", "cost", "per_task"):
        tex = (report / "toy" / "tables" / f"{name}.tex").read_text()
        check_booktabs(tex)
        assert tex.isascii()
    summary = (report / "toy" / "tables" / "summary.tex").read_text()
    good = next(line for line in summary.splitlines() if line.startswith("good &"))
    assert "$\\mathbf{" + cell([acc(GOOD[s]) for s in SEEDS]).replace(" ± ", " \\pm ") + "}^{\\dagger}$" in good
    assert "\\begin{table*}" in summary and "\\label{tab:toy-summary}" in summary
    assert "p $<$ 0.05" in summary  # a bare < prints as ¡ in LaTeX's default text font


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no pdflatex on PATH: LaTeX compile not checked "
                    "(the structure is checked by test_latex_tables_parse_as_balanced_booktabs)")
def test_latex_tables_compile(report, tmp_path):
    inputs = "\n".join(f"\\input{{{report / 'toy' / 'tables' / n}.tex}}" for n in ("summary", "cost", "per_task"))
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
                                      f"{inputs}\n\\end{{document}}\n")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 0


def test_same_results_give_byte_identical_files(results, report, tmp_path):
    build_report([results], tmp_path / "again", figures=False)
    written = sorted(p.relative_to(report) for p in report.rglob("*") if p.is_file())
    assert {"README.md", "index.html"} <= {str(p) for p in written}
    differ = [str(p) for p in written if (report / p).read_bytes() != (tmp_path / "again" / p).read_bytes()]
    assert differ == []  # tables, numbers, README and page
    # the order the runs are found in does not matter either
    runs = sorted((results / "exp" / "toy").iterdir(), reverse=True)
    build_report(runs, tmp_path / "reordered", figures=False)
    for p in written:
        if "tables" in p.parts or p.name == "numbers.json":
            assert (report / p).read_bytes() == (tmp_path / "reordered" / p).read_bytes(), p


def test_groups_that_mix_experiments_are_refused(tmp_path):
    make_run(tmp_path / "a", "sft", 0, SFT[0])
    make_run(tmp_path / "b", "sft", 1, SFT[1], train={"lr": 0.5})
    with pytest.raises(ConfigError, match=r"differ in more than the seed \(train.lr: 0.01 vs 0.5"):
        build_report([tmp_path / "a", tmp_path / "b"], tmp_path / "out", figures=False)
    make_run(tmp_path / "a" / "again", "sft", 0, SFT[0])  # one folder holding a seed twice: refused
    with pytest.raises(ConfigError, match="seed 0 of 'sft' on 'toy' is stored twice"):
        build_report([tmp_path / "a", tmp_path / "b"], tmp_path / "out", figures=False)
    # two folders that both hold it are compared instead (tests/test_report_folders.py)


def test_unknown_suite_names_the_file_and_the_allowed_suites(results, tmp_path):
    with pytest.raises(ConfigError, match=r"metrics.json: no probe suite 'mc' \(allowed: qa\)"):
        build_report([results], tmp_path / "out", suite="mc", figures=False)


def test_one_seed_shows_no_interval_and_a_missing_reference_no_test(tmp_path):
    make_run(tmp_path / "res", "a", 0, SFT[0])
    make_run(tmp_path / "res", "b", 0, GOOD[0])
    build_report([tmp_path / "res"], tmp_path / "out", figures=False)
    text = (tmp_path / "out" / "toy" / "tables" / "summary.md").read_text()
    rows = md_rows(tmp_path / "out" / "toy" / "tables" / "summary.md")
    col = {name.split()[0]: i for i, name in enumerate(rows["Strategy"])}
    assert rows["a"][col["ACC"]] == f"{acc(SFT[0]):.3f}" and rows["b"][col["ACC"]] == f"**{acc(GOOD[0]):.3f}**"
    assert "±" not in "".join(rows["a"] + rows["b"])
    assert "One seed: no interval" in text and "no test: the reference sft is not among these runs" in text
    notes = notes_of(tmp_path / "out", "Summary")
    assert "n = 1 seed;" in notes and "run it too (--strategies sft,...)" in notes
    build_report([tmp_path / "res"], tmp_path / "out", reference="b", figures=False)
    text = (tmp_path / "out" / "toy" / "tables" / "summary.md").read_text()
    assert "no test against b (fewer than two seeds in common)" in text
    assert list(md_rows(tmp_path / "out" / "toy" / "tables" / "summary.md")) == ["Strategy", "b", "a"]  # reference first


def test_a_rebuild_removes_what_the_results_no_longer_hold(tmp_path):
    make_run(tmp_path / "old", "sft", 0, SFT[0])
    make_run(tmp_path / "new", "sft", 0, SFT[0], stream="other")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    build_report([tmp_path / "old"], tmp_path / "out", figures=False)
    assert (tmp_path / "out" / "toy" / "tables" / "summary.tex").exists()
    build_report([tmp_path / "new"], tmp_path / "out", figures=False)
    assert not (tmp_path / "out" / "toy").exists()  # written by the last report only
    assert (tmp_path / "out" / "other" / "tables" / "summary.tex").exists()
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"  # never written by a report: kept


def test_a_manifest_entry_outside_the_report_folder_is_never_removed(tmp_path):
    """The list of files the last report wrote is read back to remove stale ones; an entry that leads out of
    the report folder (an edited or corrupt list) must not delete anything there."""
    from clbench.reporting.build import MANIFEST

    make_run(tmp_path / "runs", "sft", 0, SFT[0])
    out = tmp_path / "reports" / "out"
    build_report([tmp_path / "runs"], out, figures=False)
    victim = tmp_path / "reports" / "precious.txt"
    victim.write_text("keep")
    (out / MANIFEST).write_text((out / MANIFEST).read_text() + "../precious.txt\n" + str(victim) + "\n")
    build_report([tmp_path / "runs"], out, figures=False)
    assert victim.read_text() == "keep"
    assert (out / "toy" / "tables" / "summary.md").exists()
