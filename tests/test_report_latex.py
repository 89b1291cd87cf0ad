"""The LaTeX a report writes compiles unedited in a two-column paper, and says what the Markdown says.

Every ``.tex`` of a worst-case report (``tests.paper_runs``: every table kind, nineteen long labels) is
compiled with pdflatex, when installed, inside a two-column article with ACL's text block (6.3 in, the
narrowest common one): no error, no overfull box over 1 pt, no missing glyph, no ``?`` the Markdown does
not have, captions of at most three lines. Without pdflatex the cell-for-cell agreement with the
Markdown and the escaping are still checked.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from clbench.errors import ConfigError
from clbench.reporting.build import build_report
from clbench.reporting.latex import latex_escape
from tests.paper_runs import paper_results

PDFLATEX = shutil.which("pdflatex")
needs_pdflatex = pytest.mark.skipif(PDFLATEX is None, reason="no pdflatex on PATH (apt install "
                                    "texlive-latex-recommended): the LaTeX is not compiled")
# a two-column conference page (ACL's text block) that logs each caption's line count
PREAMBLE = r"""\documentclass[10pt,twocolumn]{article}
\usepackage{booktabs}
\usepackage{tabularx}
\setlength{\textwidth}{6.3in}\setlength{\columnsep}{0.2in}
\makeatletter
\let\clbench@makecaption\@makecaption
\long\def\@makecaption#1#2{\setbox\@tempboxa\vbox{\hsize\linewidth\noindent #1: #2\par
  \xdef\clbench@lines{\the\prevgraf}}\typeout{CAPTION-LINES \clbench@lines}\clbench@makecaption{#1}{#2}}
\makeatother
\begin{document}
"""


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    root = paper_results(tmp_path_factory.mktemp("results"))
    out = tmp_path_factory.mktemp("report")
    build_report([root], out, figures=False)
    return out / "toy" / "tables"


def test_the_worst_case_report_writes_every_table_kind(tables):
    names = sorted(p.stem for p in tables.glob("*.tex"))
    assert names == ["categories", "cost", "known", "matched", "notes", "orders", "per_task", "summary", "tuning"]


def compile_tex(tex_path, workdir) -> str:
    (workdir / "doc.tex").write_text(PREAMBLE + f"\\input{{{tex_path}}}\n\\end{{document}}\n")
    proc = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=workdir,
                          capture_output=True, text=True, timeout=120, check=False)
    log = (workdir / "doc.log").read_text(errors="replace")
    assert proc.returncode == 0, f"{tex_path.name} does not compile:\n{proc.stdout[-3000:]}"
    return log


@needs_pdflatex
@pytest.mark.parametrize("name", ["summary", "cost", "per_task", "matched", "known", "categories", "orders",
                                  "tuning", "notes"])
def test_every_table_compiles_in_a_two_column_paper(tables, name, tmp_path):
    assert_fits_a_paper(tables / f"{name}.tex", tmp_path)


def assert_fits_a_paper(tex, workdir) -> None:
    """``tex`` compiles in the two-column page: no overfull box over 1 pt, no missing glyph, captions of at
    most three lines (the notes file has none), no "?" its Markdown twin does not have."""
    name = tex.stem
    log = compile_tex(tex, workdir)
    overfull = [float(x) for x in re.findall(r"Overfull \\hbox \((\d+(?:\.\d+)?)pt too wide", log)]
    assert all(x <= 1.0 for x in overfull), f"{name}.tex: overfull boxes {overfull}"
    assert "Missing character" not in log
    lines = [int(x) for x in re.findall(r"CAPTION-LINES (\d+)", log)]
    if name != "notes":
        assert lines and max(lines) <= 3, f"{name}.tex: caption lines {lines}"
    md = tex.with_suffix(".md").read_text()
    # no "?" that the Markdown does not have (a symbol LaTeX could not write)
    assert tex.read_text().count("?") <= md.count("?"), name


@needs_pdflatex
def test_a_table_with_an_unmapped_symbol_would_not_compile(tmp_path):
    """The check above can fail: a raw Δ in a caption stops pdflatex (so it is never let through)."""
    bad = tmp_path / "bad.tex"
    bad.write_text("\\begin{table}\\caption{ΔF}\\end{table}\n")
    (tmp_path / "doc.tex").write_text(PREAMBLE + f"\\input{{{bad}}}\n\\end{{document}}\n")
    proc = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0 or "Missing character" in (tmp_path / "doc.log").read_text(errors="replace")


# --- the Markdown and the LaTeX agree cell for cell --------------------------------------------------
# written out here, not read from clbench.reporting.latex, so a wrong mapping there shows as a mismatch
TEX_TO_TEXT = [(r"\begin{tabular}[b]{@{}r@{}}", ""), (r"\begin{tabular}[b]{@{}l@{}}", ""),
               (r"\begin{tabular}[b]{@{}c@{}}", ""), (r"\end{tabular}", ""), (r" \\ ", " "),
               (r"\mathbf{", "{"), (r"^{\dagger}", "†"), (r"\pm", "±"), (r"\star", "★"), (r"\uparrow", "↑"),
               (r"\downarrow", "↓"), (r"\Delta", "Δ"), (r"\in", "∈"), (r"\_", "_"), (r"\{", "\x00"),
               (r"\}", "\x01"), ("--", "–"), ("$<$", "<"), ("$>$", ">"), (r"\%", "%")]


def tex_to_text(cell: str) -> str:
    for tex, text in TEX_TO_TEXT:
        cell = cell.replace(tex, text)
    cell = cell.replace("$", "").replace("{", "").replace("}", "")
    cell = re.sub(r"(\d) ± (\d)", r"\1 ± \2", cell)
    return re.sub(r"\s+", " ", cell.replace("\x00", "{").replace("\x01", "}")).strip()


def md_cells(path) -> dict[tuple[str, str], str]:
    lines = [line for line in path.read_text().splitlines() if line.startswith("| ")]
    split = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]
    header, body = split[0], split[1:]
    return {(row[0], h): row[j].replace("**", "").replace("\\|", "|").replace("\\*", "*")
            for row in body for j, h in enumerate(header)}


def tex_cells(path) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    text = path.read_text()
    for part in re.findall(r"\\toprule\n(.*?)\\bottomrule", text, flags=re.DOTALL):
        header_line, _, body = part.partition("\\midrule\n")
        header = [tex_to_text(h) for h in header_line.strip().removesuffix("\\\\").split(" & ")]
        for line in body.strip().splitlines():
            row = [tex_to_text(c) for c in line.removesuffix("\\\\").split(" & ")]
            for h, c in zip(header, row):
                key = (row[0], h)
                assert key not in out or out[key] == c, f"{path.name}: {key} twice"
                out[key] = c
    return out


@pytest.mark.parametrize("name", ["summary", "cost", "per_task", "matched", "known", "categories", "orders",
                                  "tuning"])
def test_markdown_and_latex_agree_cell_for_cell(tables, name):
    md, tex = md_cells(tables / f"{name}.md"), tex_cells(tables / f"{name}.tex")
    assert len(md) >= 15
    assert tex == md


def test_a_summary_too_wide_for_the_page_is_cut_into_column_selections(tables):
    """The headline metrics first (ACC, F, LA, Pareto), the rest in a second float that refers back."""
    text = (tables / "summary.tex").read_text()
    headers = re.findall(r"\\toprule\n(.*?) \\\\\n", text)
    assert [tex_to_text(h) for h in headers] == ["Strategy & n & ACC ↑ & F ↓ & LA ↑ & Pareto",
                                                 "Strategy & n & BWT ↑ & FWT ↑ & GR ↑"]
    assert "continued from Table~\\ref{tab:toy-summary}" in text and "\\label{tab:toy-summary-part2}" in text


def test_captions_are_short_and_the_notes_hold_the_definitions(tables):
    notes_md, notes_tex = (tables / "notes.md").read_text(), (tables / "notes.tex").read_text()
    for name, label in (("summary", "tab:toy-summary"), ("matched", "tab:toy-matched"), ("tuning", "tab:toy-tuning")):
        assert f"\\ref{{{label}}}" in notes_tex and f"`{label}`" in notes_md
        caption = (tables / f"{name}.md").read_text().split("\n")[0]
        assert len(caption) < 260, caption
    assert "Holm–Bonferroni-adjusted p < 0.05" in notes_md and "paired t-test" in notes_md
    assert "FWT_base" in notes_md and "$\\Delta$" in notes_tex  # ΔF, in the matched table's notes
    assert "ties go to the candidate listed first" in notes_md


def test_matched_and_tuning_symbols_are_written_as_latex(tables):
    """ΔF and lr ∈ {…} were "?F" and "lr ? {…}" (latex_escape fell back to "?")."""
    matched, tuning = (tables / "matched.tex").read_text(), (tables / "tuning.tex").read_text()
    assert "$\\Delta$F" in matched and re.search(r"\$\\Delta\$ (\\\\ )?retention", matched)
    assert "lr $\\in$ \\{0.0015, 0.003, 0.006\\}" in tuning
    assert "?" not in matched + tuning


def test_a_tie_in_tuning_is_said(tables):
    rows = {k[0]: v for k, v in md_cells(tables / "tuning.md").items() if k[1] == "Why"}
    assert "a tie: 3 of 3 candidates score the same, the first listed is taken" in rows["sft"]
    assert "tie" not in rows["layer_tiers"] and "tie" not in rows["importance_tiers"]


def test_latex_escape_maps_every_symbol_the_reports_use_and_refuses_the_rest():
    assert latex_escape("ΔF ≥ 0, lr ∈ {1e-3} ± 0.1 † − λ·x ≤ ‖g‖ → μ … ×2 – σ² é") == (
        "$\\Delta$F $\\geq$ 0, lr $\\in$ \\{1e-3\\} $\\pm$ 0.1 $^{\\dagger}$ $-$ $\\lambda$$\\cdot$x $\\leq$ "
        "$\\|$g$\\|$ $\\rightarrow$ $\\mu$ \\ldots{} $\\times$2 -- $\\sigma$$^{2}$ \\'{e}")
    with pytest.raises(ConfigError, match=r"cannot write '漢' \(U\+6F22 CJK UNIFIED IDEOGRAPH-6F22\) of 'a漢'"):
        latex_escape("a漢")
