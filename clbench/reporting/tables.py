"""Tables of per-seed numbers: mean ± 95% CI, best per column in bold, a mark where a strategy differs
from the reference, rendered as Markdown and as LaTeX (booktabs, :mod:`clbench.reporting.latex`).

A :class:`Table` is built once (:func:`build_table` from per-seed numbers, or directly with its cells)
and rendered by pure functions, so the Markdown, the LaTeX and the HTML page always show the same
cells. A table carries two texts: its *caption*, at most three lines in a paper (what it shows, n,
what the marks mean), and its *notes*, every definition the caption leaves out, which the report
collects per stream in ``tables/notes.{md,tex}`` (:mod:`clbench.reporting.notes`). A new table needs
nothing else: give it a short caption and its notes, and the report writes both files and the notes.

Everything is deterministic — fixed row order (the reference first, then labels sorted), fixed
decimals, no dates — so the same results give byte-identical files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from clbench.reporting.latex import latex_escape, render_float
from clbench.reporting.stats import CONFIDENCE, CONSTANT, best, holm, mean_ci, paired_test, significant

MARK = "†"
FLAG = "★"
FLAG_KEY = "flag"  # the flag column, in build_table's groups


@dataclass(frozen=True)
class Column:
    """A numeric column: which per-seed number, its header, its direction and its display."""

    key: str
    header: str
    higher_is_better: bool
    decimals: int = 3
    scale: float = 1.0  # shown values are divided by this (the unit goes in the header)


@dataclass(frozen=True)
class Cell:
    text: str = ""  # a plain cell (label, n, flag), or the formatted mean of a numeric one
    pm: str | None = None  # formatted CI half-width (numeric cells with n ≥ 2)
    bold: bool = False
    mark: bool = False  # differs significantly from the reference strategy (Holm-adjusted)
    numeric: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    label: str  # LaTeX \label
    caption: str  # at most three lines in a two-column paper: what the table shows, n, the marks
    headers: tuple[str, ...]
    align: str  # one of l/r/c per column, or X (clbench.reporting.latex.WRAP): text that wraps
    rows: tuple[tuple[Cell, ...], ...]
    numbers: list[dict] = field(default_factory=list, compare=False)  # statistics behind each cell
    notes: str = ""  # every definition the caption leaves out (tables/notes.{md,tex})
    keys: int = 1  # leading columns that name a row (repeated in each part of a table cut by columns)
    groups: tuple[tuple[int, ...], ...] = ()  # column selections for a LaTeX table too wide for a page


def fmt(x: float, decimals: int) -> str:
    """Fixed-point text without a negative zero (``-0.000`` reads as a loss that is not there)."""
    s = f"{x:.{decimals}f}"
    return f"{0.0:.{decimals}f}" if float(s) == 0 else s


def unit_scale(values: Sequence[float | None]) -> tuple[float, str]:
    """A divisor and its suffix (k, M, G) that keeps the largest magnitude below 1000."""
    big = max((abs(v) for v in values if v is not None and math.isfinite(v)), default=0.0)
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if big >= scale:
            return scale, suffix
    return 1.0, ""


def order_labels(labels, reference: str) -> list[str]:
    labels = sorted(labels)
    return ([reference] if reference in labels else []) + [x for x in labels if x != reference]


def _seeds(ns: Sequence[int]) -> str:
    lo, hi = min(ns), max(ns)
    return f"n = {lo} seed{'s' if lo != 1 else ''}" if lo == hi else f"n = {lo}–{hi} seeds"


def stats_caption(ns: Sequence[int], reference: str, has_reference: bool, pairs: Sequence[int]) -> str:
    """The short sentence a caption ends with: interval, n, bold, the significance mark."""
    ci = (f"Mean ± {round(CONFIDENCE * 100)}% CI over {_seeds(ns)}" if max(ns) >= 2
          else "One seed: no interval")
    if has_reference and pairs and max(pairs) >= 2:
        test = f"{MARK}: differs from {reference} (Holm-adjusted p < 0.05)"
    elif has_reference:
        test = f"no test against {reference} (fewer than two seeds in common)"
    else:
        test = f"no test: the reference {reference} is not among these runs"
    return f"{ci}; bold: best per column; {test}."


def stats_notes(ns: Sequence[int], reference: str, has_reference: bool, pairs: Sequence[int],
                comparisons: int = 0, constant: int = 0, bootstrap: bool = False) -> str:
    """The full statistics paragraph of a table's notes: interval, n, bold, significance test."""
    lo, hi = min(ns), max(ns)
    n_text = f"n = {lo} seed{'s' if lo != 1 else ''}" if lo == hi else f"n = {lo}–{hi} seeds, per row in column n"
    text = (f"Mean ± {round(CONFIDENCE * 100)}% confidence half-width over seeds (Student t interval, "
            f"n − 1 degrees of freedom; {n_text}; no interval where n = 1). Bold: best value per column as "
            f"shown (↑ higher is better, ↓ lower is better).")
    if bootstrap:
        text += (" A second 95% interval, a bootstrap over seeds and probe items (for a cell the items drawn once "
                 "for all drawn seeds; for its difference from "
                 f"{reference}, paired, drawn per seed), is in numbers.json for every score cell and that difference.")
    if has_reference and pairs and max(pairs) >= 2:
        p_lo, p_hi = min(pairs), max(pairs)
        p_text = f"{p_lo}" if p_lo == p_hi else f"{p_lo}–{p_hi}"
        text += (f" {MARK}: differs from {reference} at Holm–Bonferroni-adjusted p < 0.05 over the {comparisons} "
                 f"comparison{'s' if comparisons != 1 else ''} with {reference} in this table (two-sided paired "
                 f"t-test over the seeds both ran, {p_text} pairs)")
        text += (f"; {constant} difference{'s' if constant != 1 else ''} identical on every seed cannot be "
                 f"tested and {'are' if constant != 1 else 'is'} not marked." if constant else ".")
    elif has_reference:
        text += (f" No test against {reference}: fewer than two seeds in common (a paired test needs two or "
                 "more seeds that both ran).")
    else:
        text += (f" No test: {reference}, the reference every row is compared with, is not among these runs; "
                 f"run it too (--strategies {reference},...), or compare with another row (clbench report "
                 "--reference LABEL).")
    return text


def build_table(name: str, label: str, caption: str, values: Mapping[str, Mapping[str, Mapping[int, float | None]]],
                columns: Sequence[Column], reference: str = "sft", flags: Mapping[str, bool] | None = None,
                flag_header: str = "Pareto", intervals: Mapping[tuple[str, str], dict] | None = None,
                notes: str = "", groups: Sequence[Sequence[str]] = ()) -> Table:
    """``values[strategy][column key][seed]`` → a table with one row per strategy. ``caption`` says what
    the table shows in a sentence; ``notes`` defines its columns (the statistics are added to both).

    Columns whose every value is missing are left out. ``flags`` adds a last column with
    :data:`FLAG` for the strategies it marks (the Pareto front). ``intervals`` (``{(strategy, column):
    {...}}``, :func:`clbench.reporting.bootstrap.bootstrap_intervals`) adds the bootstrap intervals to
    the numbers. The significance marks are Holm-adjusted over every comparison in the table.
    ``groups`` (column keys; :data:`FLAG_KEY` for the flag column) are the column selections a LaTeX
    table too wide for a page is cut into (the columns no group names form a last one).
    """
    labels = order_labels(values, reference)
    has_ref = reference in values
    columns = [c for c in columns if any(v is not None for lab in labels for v in values[lab].get(c.key, {}).values())]
    est = {(lab, c.key): mean_ci(values[lab].get(c.key, {}).values()) for lab in labels for c in columns}
    shown = {k: (None if e.mean is None else fmt(e.mean / col.scale, col.decimals))
             for col in columns for k, e in est.items() if k[1] == col.key}
    winners = {c.key: best([None if shown[(lab, c.key)] is None else float(shown[(lab, c.key)]) for lab in labels],
                           c.higher_is_better) for c in columns}
    tests = {(lab, c.key): paired_test(values[lab].get(c.key, {}), values[reference].get(c.key, {}))
             for lab in labels if has_ref and lab != reference for c in columns}
    keys = list(tests)
    adjusted = dict(zip(keys, holm([tests[k].p for k in keys])))
    rows, numbers, ns = [], [], []
    for i, lab in enumerate(labels):
        n = max((len([v for v in values[lab].get(c.key, {}).values() if v is not None]) for c in columns), default=0)
        ns.append(n)
        cells = [Cell(lab), Cell(str(n))]
        for c in columns:
            e = est[(lab, c.key)]
            test = tests.get((lab, c.key))
            p_adj = adjusted.get((lab, c.key))
            if e.mean is None:
                cells.append(Cell("–"))
            else:
                pm = None if e.half_width is None else fmt(e.half_width / c.scale, c.decimals)
                cells.append(Cell(shown[(lab, c.key)], pm, i in winners[c.key], significant(p_adj), numeric=True))
            numbers.append({"strategy": lab, "column": c.key, "mean": e.mean, "half_width": e.half_width, "n": e.n,
                            "sd": e.sd, "p_vs_reference": test.p if test else None, "p_holm": p_adj,
                            "no_test": test.no_test if test else None, "pairs": test.pairs if test else 0,
                            "seeds": {str(s): v for s, v in sorted(values[lab].get(c.key, {}).items())},
                            **({"bootstrap": intervals.get((lab, c.key))} if intervals is not None else {})})
        if flags is not None:
            cells.append(Cell(FLAG if flags.get(lab) else ""))
        rows.append(tuple(cells))
    headers = ("Strategy", "n", *(c.header for c in columns), *((flag_header,) if flags is not None else ()))
    align = "lr" + "r" * len(columns) + ("c" if flags is not None else "")
    pairs = [t.pairs for t in tests.values()]
    comparisons = sum(t.p is not None for t in tests.values())
    constant = sum(t.no_test == CONSTANT for t in tests.values())
    has_boot = intervals is not None and any(v is not None for v in intervals.values())
    ns = ns or [0]
    full_caption = f"{caption} {stats_caption(ns, reference, has_ref, pairs)}"
    full_notes = " ".join(x for x in (notes, stats_notes(ns, reference, has_ref, pairs, comparisons, constant,
                                                         has_boot)) if x)
    index = {c.key: 2 + i for i, c in enumerate(columns)} | ({FLAG_KEY: len(headers) - 1} if flags is not None else {})
    chosen = [tuple(index[k] for k in g if k in index) for g in groups]
    named = {j for g in chosen for j in g}
    rest = tuple(j for j in range(2, len(headers)) if j not in named)
    parts = tuple(g for g in (*chosen, rest) if g) if groups else ()
    return Table(name, label, full_caption, headers, align, tuple(rows), numbers, full_notes, keys=2, groups=parts)


# --- Markdown ----------------------------------------------------------------------------------------
def md_escape(text: str) -> str:
    """Escape what breaks a pipe table or starts emphasis (GFM leaves ``_`` inside words alone)."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*")


def plain_text(cell: Cell) -> str:
    """What a cell shows, without emphasis (the text both renderings agree on)."""
    if not cell.numeric:
        return cell.text
    return (cell.text if cell.pm is None else f"{cell.text} ± {cell.pm}") + (MARK if cell.mark else "")


def _md_cell(cell: Cell) -> str:
    if not cell.numeric:
        return md_escape(cell.text)
    body = cell.text if cell.pm is None else f"{cell.text} ± {cell.pm}"
    return (f"**{body}**" if cell.bold else body) + (MARK if cell.mark else "")


def to_markdown(table: Table) -> str:
    """The caption as a paragraph, then a pipe table (GitHub-flavoured)."""
    sep = {"l": "---", "r": "---:", "c": ":---:", "X": "---"}
    lines = [f"**{md_escape(table.name)}.** {table.caption}", "",
             "| " + " | ".join(md_escape(h) for h in table.headers) + " |",
             "|" + "|".join(sep[a] for a in table.align) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines) + "\n"


# --- LaTeX -------------------------------------------------------------------------------------------
def _tex_cell(cell: Cell) -> str:
    if not cell.numeric:
        return r"$\star$" if cell.text == FLAG else ("--" if cell.text == "–" else latex_escape(cell.text))
    body = cell.text if cell.pm is None else f"{cell.text} \\pm {cell.pm}"
    body = f"\\mathbf{{{body}}}" if cell.bold else body
    mark = "^{\\dagger}" if cell.mark else ""
    return f"${body}{mark}$"


def to_latex(table: Table) -> str:
    """The table as one float (or several, cut by columns) for a two-column paper
    (:mod:`clbench.reporting.latex`: ``table`` or ``table*`` by width, booktabs)."""
    return render_float(table.name, table.label, table.caption, table.align, table.headers,
                        [[_tex_cell(c) for c in row] for row in table.rows],
                        [[plain_text(c) for c in row] for row in table.rows],
                        [[c.bold for c in row] for row in table.rows], table.keys, table.groups)
