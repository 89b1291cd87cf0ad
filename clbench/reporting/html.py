"""``index.html``: the index of :mod:`clbench.reporting.index` as one page, figures inline.

Rendered from the same blocks as ``README.md``; figures are ``<img>`` of the PNGs beside the page
(each links to its PDF), so the page is small, deterministic and works from a file browser.
Hand-written rather than a Markdown library: the blocks are few and fixed, and no extra dependency
is worth a dozen lines.
"""

from __future__ import annotations

import re
from html import escape
from pathlib import Path

from clbench.reporting.index import Bullets, FigureBlock, Heading, Para, Pre, TableBlock, index_blocks
from clbench.reporting.tables import MARK, Cell, Table
from clbench.results.files import atomic_write_bytes

CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:62em;margin:2em auto;
padding:0 1em;line-height:1.45;color:#222}table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
th,td{padding:.25em .6em;border-bottom:1px solid #ddd}thead th{border-bottom:2px solid #444;text-align:center}
td.num{text-align:right;font-variant-numeric:tabular-nums}caption{caption-side:top;text-align:left;
font-size:.9em;padding:.4em 0}figure{margin:1.2em 0}figure img{max-width:100%;height:auto}
figcaption{font-size:.9em}pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.85em}
code{background:#f3f3f3;padding:0 .2em}"""


def inline(text: str) -> str:
    """Escape, then turn `code` spans into ``<code>``."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(text))


def _cell(cell: Cell) -> str:
    if not cell.numeric:
        return f"<td>{escape(cell.text)}</td>"
    body = escape(cell.text if cell.pm is None else f"{cell.text} ± {cell.pm}")
    body = f"<b>{body}</b>" if cell.bold else body
    return f'<td class="num">{body}{f"<sup>{MARK}</sup>" if cell.mark else ""}</td>'


def table_html(table: Table) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in table.headers)
    rows = "\n".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in table.rows)
    return (f"<table>\n<caption><b>{escape(table.name)}.</b> {escape(table.caption)}</caption>\n"
            f"<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>")


def to_html_doc(blocks) -> str:
    title = next((b.text for b in blocks if isinstance(b, Heading)), "clbench report")
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>{escape(title.replace('`', ''))}</title>", f"<style>{CSS}</style>", "</head>", "<body>"]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{inline(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>\n" + "\n".join(f"<li>{inline(x)}</li>" for x in b.items) + "\n</ul>")
        elif isinstance(b, Pre):
            out.append(f"<pre>{escape(b.text)}</pre>")
        elif isinstance(b, TableBlock):
            out.append(table_html(b.table))
            out.append(f'<p>Files: <a href="{escape(b.md)}">Markdown</a> · <a href="{escape(b.tex)}">LaTeX</a></p>')
        elif isinstance(b, FigureBlock):
            f = b.figure
            out.append(f'<figure><a href="{escape(f.stem)}.pdf"><img src="{escape(f.stem)}.png" '
                       f'alt="{escape(f.title)}"></a><figcaption><b>{escape(f.title)}.</b> {escape(f.caption)} '
                       f'<a href="{escape(f.stem)}.pdf">PDF</a></figcaption></figure>')
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def write_html(out_dir: Path, paths, reports, reference: str, left_out=()) -> Path:
    path = Path(out_dir) / "index.html"
    atomic_write_bytes(path, to_html_doc(index_blocks(paths, reports, reference, left_out)).encode())
    return path
