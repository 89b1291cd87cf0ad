"""Tables as LaTeX that compiles unedited in a two-column paper.

A paper ``\\input``-s each table file as it is: one float (or a few, when cut by columns). Every file
needs ``\\usepackage{booktabs}`` (texlive-latex-recommended), and ``\\usepackage{tabularx}`` (LaTeX's
own tools bundle) when a column of text wraps; its first lines name what it needs. Numbers are in math
mode (a true minus sign), bold is ``\\mathbf``, significance marks are ``^{\\dagger}``.

Where a table goes is decided from its width, estimated from the characters of its widest cells
(:func:`text_width`, within 5% of pdflatex's) against the narrowest common two-column text block
(:data:`TEXT_WIDTH_PT`, ACL's 6.3 in; ICML's and IEEE's are wider): a table that fits one column is a
``table``, a wider one a ``table*`` (full width in a two-column paper, an ordinary table in one
column); a table with text columns (:data:`WRAP`) is a ``tabularx`` as wide as the line, its text
columns wrapping. A table too wide for the full width at ``\\small`` is set in ``\\footnotesize``
(:data:`FONTS`), and when even that is too wide it is cut into column selections (the table's
``groups``, e.g. the headline metrics first), the strategy column repeated in each, each its own float.
``tests/test_report_latex.py`` compiles every table of a worst-case report in such a paper with
pdflatex and checks it.

Text is escaped by :func:`latex_escape`, which knows every character the reports write (Greek letters,
arrows, relations, accents) and refuses any other non-ASCII character with an error naming it: a
table never shows a ``?`` where the Markdown shows a symbol.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from clbench.errors import ConfigError

WRAP = "X"  # an alignment letter: a text column that wraps (tabularx); Markdown shows it left-aligned
TEXT_WIDTH_PT = 455.0  # the full text width of a two-column paper (ACL: 6.3 in; ICML 6.75 in, IEEE 7.16 in)
COLUMN_WIDTH_PT = 219.0  # one of its columns (ACL: 3.04 in)
PACKAGES = "booktabs"

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
            "<": r"$<$", ">": r"$>$", "|": r"$|$"}  # OT1 text fonts print < as ¡
_SYMBOLS = {
    "±": r"$\pm$", "†": r"$^{\dagger}$", "‡": r"$^{\ddagger}$", "★": r"$\star$", "↑": r"$\uparrow$",
    "↓": r"$\downarrow$", "→": r"$\rightarrow$", "←": r"$\leftarrow$", "−": r"$-$", "–": "--", "—": "---",
    "‐": "-", "‑": "-", "×": r"$\times$", "÷": r"$\div$", "≤": r"$\leq$", "≥": r"$\geq$", "≠": r"$\neq$",
    "≈": r"$\approx$", "∼": r"$\sim$", "∈": r"$\in$", "∉": r"$\notin$", "∞": r"$\infty$", "√": r"$\surd$",
    "∂": r"$\partial$", "∇": r"$\nabla$", "∑": r"$\sum$", "Σ": r"$\Sigma$", "‖": r"$\|$", "·": r"$\cdot$",
    "…": r"\ldots{}", "°": r"$^{\circ}$", "²": r"$^{2}$", "³": r"$^{3}$", "¹": r"$^{1}$", "½": r"$\frac{1}{2}$",
    "µ": r"$\mu$", "‘": "`", "’": "'", "“": "``", "”": "''", "′": r"$'$", "§": r"\S{}", "¶": r"\P{}",
    "\u00a0": "~", "\u2009": r"\,", "\u202f": r"\,", "✓": r"$\surd$", "•": r"$\bullet$", "∅": r"$\emptyset$",
}
# combining accents (what NFD leaves after a base letter) → LaTeX accent commands
_ACCENTS = {"\u0301": "'", "\u0300": "`", "\u0302": "^", "\u0308": '"', "\u0303": "~", "\u0304": "=",
            "\u0306": "u", "\u030c": "v", "\u0307": ".", "\u030a": "r", "\u0327": "c", "\u030b": "H", "\u0328": "k"}
_LETTERS = {"ß": r"\ss{}", "æ": r"\ae{}", "Æ": r"\AE{}", "œ": r"\oe{}", "Œ": r"\OE{}", "ø": r"\o{}", "Ø": r"\O{}",
            "å": r"\aa{}", "Å": r"\AA{}", "ł": r"\l{}", "Ł": r"\L{}", "ı": r"\i{}"}
# capital Greek letters that LaTeX has as commands (the others look like Latin capitals)
_GREEK_CAPITALS = {"GAMMA", "DELTA", "THETA", "LAMDA", "XI", "PI", "SIGMA", "UPSILON", "PHI", "PSI", "OMEGA"}
_GREEK_LATIN = {"ALPHA": "A", "BETA": "B", "EPSILON": "E", "ZETA": "Z", "ETA": "H", "IOTA": "I", "KAPPA": "K",
                "MU": "M", "NU": "N", "OMICRON": "O", "RHO": "P", "TAU": "T", "CHI": "X"}


def _greek(ch: str) -> str | None:
    name = unicodedata.name(ch, "")
    for case in ("SMALL", "CAPITAL"):
        prefix = f"GREEK {case} LETTER "
        if name.startswith(prefix):
            letter = name[len(prefix):]
            if letter == "FINAL SIGMA":
                letter = "SIGMA"
            if " " in letter:
                return None
            if case == "CAPITAL":
                if letter in _GREEK_LATIN:
                    return _GREEK_LATIN[letter]
                return f"$\\{'Lambda' if letter == 'LAMDA' else letter.capitalize()}$" if letter in _GREEK_CAPITALS else None
            if letter == "OMICRON":
                return "o"
            return f"$\\{'lambda' if letter == 'LAMDA' else letter.lower()}$"
    return None


def _accented(ch: str) -> str | None:
    base, *marks = unicodedata.normalize("NFD", ch)
    if not marks or not base.isascii() or any(m not in _ACCENTS for m in marks):
        return None
    out = {"i": r"\i{}", "j": r"\j{}"}.get(base, base)
    for m in marks:
        out = f"\\{_ACCENTS[m]}{{{out}}}"
    return out


def latex_char(ch: str) -> str | None:
    """One character as LaTeX that compiles with no package beyond the kernel, or ``None``."""
    if ch in _SPECIAL:
        return _SPECIAL[ch]
    if ch.isascii():
        return ch
    return _SYMBOLS.get(ch) or _LETTERS.get(ch) or _greek(ch) or _accented(ch)


def latex_escape(text: str) -> str:
    """Text → LaTeX. A character with no LaTeX form here is an error naming it and the text (never a
    silent ``?``): add it to the maps above, or rename what carries it (a strategy label, a task)."""
    out = []
    for ch in text:
        tex = latex_char(ch)
        if tex is None:
            raise ConfigError("report", f"cannot write {ch!r} (U+{ord(ch):04X} "
                              f"{unicodedata.name(ch, 'unnamed')}) of {text!r} in LaTeX; rename what carries "
                              "it (strategy label, task, category) or add it to clbench/reporting/latex.py")
        out.append(tex)
    return "".join(out)


# --- widths ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Font:
    command: str
    scale: float  # glyph widths relative to \\small
    tabcolsep: float  # pt either side of a column


FONTS = (Font("\\small", 1.0, 4.0), Font("\\footnotesize", 8 / 9, 3.0))  # 9 and 8 pt in a 10 pt paper
BOLD_DIGIT = 5.25  # pt: a bold math digit at \\small (a plain one is 4.6)


def char_width(ch: str) -> float:
    """Width in pt of one character at 9 pt (``\\small``), a little over Computer Modern's (so an
    estimate errs towards the wider float; measured against pdflatex within ±5%)."""
    if ch.isdigit():
        return 4.6
    if ch in " .,:;'`!|()[]":
        return 2.8
    if ch in "-–":
        return 3.2
    if ch in "mwMW—":
        return 8.2
    if ch.isupper() or ch in "±×†★%&#@~":
        return 7.0
    if ch.isascii():
        return 4.7
    return 7.0


def text_width(text: str, bold: bool = False) -> float:
    """Estimated width (pt) of ``text`` at ``\\small``; ``bold``: a ``\\mathbf`` number (digits wider)."""
    return sum(BOLD_DIGIT if bold and ch.isdigit() else char_width(ch) for ch in text)


def header_lines(header: str, body_width: float) -> list[str]:
    """A header wider than its column's cells, on two lines (split at the space nearest its middle);
    otherwise one line."""
    words = header.split(" ")
    if len(words) < 2 or text_width(header) <= body_width:
        return [header]
    cuts = [(abs(text_width(" ".join(words[:i])) - text_width(" ".join(words[i:]))), i) for i in range(1, len(words))]
    i = min(cuts)[1]
    return [" ".join(words[:i]), " ".join(words[i:])]


def body_widths(plain: Sequence[Sequence[str]], bold: Sequence[Sequence[bool]], n: int) -> list[float]:
    return [max((text_width(r[j], b[j]) for r, b in zip(plain, bold)), default=0.0) for j in range(n)]


def column_widths(headers: Sequence[str], bodies: Sequence[float]) -> list[float]:
    """Natural width (pt, at ``\\small``) of each column: its widest cell or header line."""
    return [max([body, *(text_width(line) for line in header_lines(h, body))]) for h, body in zip(headers, bodies)]


def natural_width(widths: Sequence[float], font: Font = FONTS[0]) -> float:
    """Width (pt) of a tabular with these column widths set in ``font``."""
    return sum(widths) * font.scale + 2 * font.tabcolsep * len(widths)


def column_parts(widths: Sequence[float], keys: int, groups: Sequence[Sequence[int]] = (),
                 budget: float | None = None, font: Font = FONTS[0]) -> list[list[int]]:
    """The columns of each float when a table is cut to fit ``budget`` (default :data:`TEXT_WIDTH_PT`):
    the table's ``groups`` (column selections, e.g. the headline metrics first), and within a group
    (or without groups) as many columns in order as fit, the first ``keys`` columns in every part."""
    budget = TEXT_WIDTH_PT if budget is None else budget
    key_cols = list(range(keys))
    parts: list[list[int]] = []
    for group in groups or [range(keys, len(widths))]:
        current: list[int] = []
        for j in group:
            if current and natural_width([widths[i] for i in key_cols + current + [j]], font) > budget:
                parts.append(key_cols + current)
                current = []
            current.append(j)
        if current:
            parts.append(key_cols + current)
    return parts or [key_cols]


def layout(align: str, widths: Sequence[float], keys: int, groups: Sequence[Sequence[int]] = ()
           ) -> tuple[Font, list[list[int]]]:
    """``(font, parts)``: the whole table in the largest of :data:`FONTS` whose width fits the page; when
    none does, the parts of :func:`column_parts` in the first. A table with wrapping text columns is
    always whole, as wide as the line."""
    every = [list(range(len(align)))]
    if WRAP in align:
        return FONTS[0], every
    for font in FONTS:
        if natural_width(widths, font) <= TEXT_WIDTH_PT:
            return font, every
    return FONTS[0], column_parts(widths, keys, groups)


def float_environment(align: str, widths: Sequence[float], font: Font = FONTS[0]) -> str:
    """``table`` when the table fits one column of a two-column paper, else ``table*``."""
    return "table" if WRAP not in align and natural_width(widths, font) <= COLUMN_WIDTH_PT else "table*"


# --- a table -------------------------------------------------------------------------------------------
def _column_spec(align: str) -> str:
    return "".join(r">{\raggedright\arraybackslash}X" if a == WRAP else a for a in align)


def _header(header: str, body_width: float, align: str) -> str:
    lines = header_lines(header, body_width)
    if len(lines) == 1:
        return latex_escape(header)
    pos = {"r": "r", "c": "c"}.get(align, "l")  # a nested tabular: no package, aligned as its column
    body = " \\\\ ".join(latex_escape(x) for x in lines)
    return f"\\begin{{tabular}}[b]{{@{{}}{pos}@{{}}}}{body}\\end{{tabular}}"


def render_float(name: str, label: str, caption: str, align: str, headers: Sequence[str],
                 cells: Sequence[Sequence[str]], plain: Sequence[Sequence[str]], bold: Sequence[Sequence[bool]],
                 keys: int = 1, groups: Sequence[Sequence[int]] = ()) -> str:
    """A table as one LaTeX float, or several cut by columns (:func:`layout`). ``headers``, ``plain``
    (every cell as the Markdown shows it, ``bold`` where it is bold) and ``caption`` are plain text;
    ``cells`` are the cells already in LaTeX."""
    bodies = body_widths(plain, bold, len(headers))
    widths = column_widths(headers, bodies)
    wraps = WRAP in align
    font, parts = layout(align, widths, keys, groups)
    packages = PACKAGES + (", tabularx" if wraps else "")
    lines = [f"% {name}: generated by `clbench report` from stored results; edit the results, not this file.",
             f"% Needs \\usepackage{{{packages}}}; every column and mark is defined in notes.tex."]
    for k, cols in enumerate(parts):
        env = float_environment("".join(align[j] for j in cols), [widths[j] for j in cols], font)
        text = latex_escape(caption) if k == 0 else f"{latex_escape(name)}, continued from Table~\\ref{{{label}}}."
        spec = _column_spec("".join(align[j] for j in cols))
        begin = f"\\begin{{tabularx}}{{\\linewidth}}{{{spec}}}" if wraps else f"\\begin{{tabular}}{{{spec}}}"
        end = "\\end{tabularx}" if wraps else "\\end{tabular}"
        lines += [f"\\begin{{{env}}}[t]", "\\centering", font.command,
                  f"\\setlength{{\\tabcolsep}}{{{font.tabcolsep:g}pt}}", "\\setlength{\\abovetopsep}{3pt}",
                  f"\\caption{{{text}}}", f"\\label{{{label}{f'-part{k + 1}' if k else ''}}}",
                  begin, "\\toprule", " & ".join(_header(headers[j], bodies[j], align[j]) for j in cols) + " \\\\",
                  "\\midrule"]
        lines += [" & ".join(row[j] for j in cols) + " \\\\" for row in cells]
        lines += ["\\bottomrule", end, f"\\end{{{env}}}"]
    return "\n".join(lines) + "\n"
