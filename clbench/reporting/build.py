"""``clbench report``: stored results → paper-ready tables, figures and an index, in one command.

    clbench report results/bench -o reports/bench

Reads only finished runs (never retrains), groups them by stream × strategy label, and writes::

    <out>/README.md, <out>/index.html            what was run (stream, model, seeds, versions, git
                                                 revisions), metric formulas, every table and figure
    <out>/<stream>/tables/{summary,cost,per_task}.{md,tex}
    <out>/<stream>/tables/matched.{md,tex}       forgetting at matched learning, when the runs include
                                                 the reference at other learning rates (reporting/matched.py)
    <out>/<stream>/tables/{orders,tuning}.{md,tex}  when the runs span task orders / were tuned
    <out>/<stream>/tables/notes.{md,tex}         every table's definitions (the captions are short)
    <out>/<stream>/figures/*.{pdf,png}
    <out>/<stream>/numbers.json                  every mean, CI half-width, n, p-value (raw and
                                                 Holm-adjusted), bootstrap interval and per-seed
                                                 value behind the tables
    <out>/.clbench-report                        the files above: a rebuild removes those it no
                                                 longer writes (a strategy dropped from the results)

The same results give byte-identical tables, README, page and numbers (nothing depends on time or
on the order files are found in).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from clbench.errors import ConfigError
from clbench.paths import inside, writable_folder
from clbench.reporting.bootstrap import bootstrap_intervals, group_items, replicates_from_items
from clbench.reporting.figures import FigureFile, write_figures
from clbench.reporting.kl_forgetting import write_kl_report
from clbench.reporting.matched import matched_table
from clbench.reporting.notes import notes_latex, notes_markdown
from clbench.reporting.orders import GIVEN, order_name, order_numbers, order_table
from clbench.reporting.stats import mean_ci, pareto_optimal
from clbench.reporting.tables import FLAG_KEY, Column, Table, build_table, to_latex, to_markdown, unit_scale
from clbench.reporting.timescales import timescale_report, write_timescale_figure
from clbench.reporting.tuning import tuning_records, tuning_table
from clbench.results.aggregate import (
    COST,
    METRICS,
    Run,
    folder_tags,
    group_runs,
    load_inventory,
    load_runs,
    seed_values,
)
from clbench.results.atomic import remove_leftovers
from clbench.results.breakdown import KNOWN_SUFFIX
from clbench.results.files import atomic_write_bytes, safe_label

REFERENCE = "sft"
MANIFEST = ".clbench-report"  # the files the last report wrote (to remove stale ones on the next)


@dataclass(frozen=True)
class StreamReport:
    stream: str
    folder: str  # relative to the report folder
    suite: str
    groups: dict[str, list[Run]]
    tables: list[tuple[Table, str, str]]  # table, Markdown path, LaTeX path (relative to the report folder)
    figures: list[FigureFile]
    notes: tuple[str, ...] = ()  # tables/notes.md and notes.tex (relative to the report folder)
    reference: str = REFERENCE  # the row the marks compare with (``compared_reference``)


def _decimals(values: dict, key: str) -> int:
    """3 decimals for scores below 10 (accuracies), fewer for large ones (perplexities): ~4 digits."""
    big = max((abs(v) for per_key in values.values() for v in per_key.get(key, {}).values() if v is not None),
              default=0.0)
    return 3 if big < 10 else 2 if big < 100 else 1


HEADLINE = ("acc", "forgetting", "learning_acc", FLAG_KEY)  # a paper's first selection when a summary is cut


def quality_columns(higher_is_better: bool, values: dict) -> list[Column]:
    """The continual-learning metrics; forgetting is sign-aligned (lower is better) for every score."""
    up = "↑" if higher_is_better else "↓"
    spec = [("acc", f"ACC {up}", higher_is_better), ("bwt", f"BWT {up}", higher_is_better),
            ("fwt_base", f"FWT {up}", higher_is_better), ("forgetting", "F ↓", False),
            ("learning_acc", f"LA {up}", higher_is_better), ("general_retention", f"GR {up}", higher_is_better)]
    return [Column(key, header, hib, _decimals(values, key)) for key, header, hib in spec]


def cost_columns(values: dict) -> list[Column]:
    """Cost columns, lower is better; large counts shown in k / M / G (the unit is in the header)."""
    def counted(key: str, name: str) -> Column:
        seen = [v for per_key in values.values() for v in per_key.get(key, {}).values() if v is not None]
        scale, suffix = unit_scale(seen)
        top = max((abs(v) for v in seen), default=0.0) / scale
        decimals = 0 if not suffix else (2 if top < 10 else 1 if top < 100 else 0)  # 3 significant digits
        return Column(key, f"{name} ({suffix}) ↓" if suffix else f"{name} ↓", False, decimals=decimals, scale=scale)

    return [Column("train_seconds", "Train time (s) ↓", False, decimals=1), counted("tokens", "Tokens"),
            counted("updated_elements", "Updated elements"), counted("trainable_parameters", "Trainable params")]


def per_task_columns(first: Run, higher_is_better: bool, values: dict) -> list[Column]:
    pretrained = first.pretrained
    up = "↑" if higher_is_better else "↓"
    return [Column(f"final:{t}", f"{t}{' (pre.)' if p else ''} {up}", higher_is_better,
                   _decimals(values, f"final:{t}")) for t, p in zip(first.tasks, pretrained)]


def table_texts(stream: str, suite: str, higher_is_better: bool) -> dict[str, tuple[str, str]]:
    """What each table shows: ``{stem: (caption sentence, notes)}`` (``build_table`` adds the statistics)."""
    la = "↑" if higher_is_better else "↓"
    summary = (f"Continual-learning metrics on stream {stream} ({suite} probes): ACC average score after the last "
               f"task, BWT backward transfer, FWT forward transfer against the base model (FWT_base: a task's score "
               f"before it is trained, after a trained task, minus the base model's), F average forgetting, LA "
               f"learning accuracy (the diagonal over the trained tasks), GR general-knowledge retention (formulas "
               f"in the report's index). ★: Pareto-optimal on (F ↓, LA {la}) — no other strategy forgets less "
               f"without also learning less.")
    cost = (f"Training cost on stream {stream}: training wall time (s, evaluation excluded), tokens trained on, "
            f"parameter elements the optimizer changed (summed over steps), and trainable parameters; k, M, G in a "
            f"header: thousands, millions, billions.")
    per_task = (f"Score ({suite}) on each task after the last task of stream {stream} (the last row of the accuracy "
                f"matrix R; pre. = learned in pretraining).")
    return {
        "summary": (f"Continual-learning metrics on {stream} ({suite}); ★: Pareto-optimal on (F ↓, LA {la}).", summary),
        "cost": (f"Training cost on {stream}.", cost),
        "per_task": (f"Final {suite} score per task on {stream}.", per_task),
    }


def knowledge_tables(groups: dict[str, list[Run]], suite: str, slug: str, stream: str, reference: str):
    """The two views of pretrained knowledge a real model needs (``clbench.results.breakdown``), when the
    runs have them: the summary on the known subset (``<suite>_known``) and the final score per category.
    """
    first = next(iter(groups.values()))[0]
    known = suite + KNOWN_SUFFIX
    if known in first.matrix["suites"]:
        hib = first.matrix["suites"][known].get("higher_is_better", True)
        values = {lab: seed_values(runs, known) for lab, runs in groups.items()}
        counts = ", ".join(f"{t}: {n}" for t, n in first.matrix["suites"][known].get("known_items", {}).items())
        caption = f"Metrics on {stream} ({suite}), pretrained tasks on the items the base model knew."
        notes = (f"Continual-learning metrics on stream {stream}, {suite} probes, counting for each pretrained task "
                 f"only the items the base model answered correctly before fine-tuning ({counts} items; decided "
                 f"once per base model, the same for every strategy and seed). Columns as in the summary.")
        yield "known", build_table("Summary on the known subset", f"tab:{slug}-known", caption, values,
                                   quality_columns(hib, values), reference, notes=notes, groups=(HEADLINE,))
    cats = {(task, c): info for task, suites in first.metrics.get("categories", {}).items()
            for c, info in suites.get(suite, {}).items()}
    if cats:
        values = {lab: {f"cat:{t}:{c}": {r.seed: _final_category(r, t, suite, c) for r in runs} for t, c in cats}
                  for lab, runs in groups.items()}
        hib = first.matrix["suites"][suite].get("higher_is_better", True)
        columns = [Column(f"cat:{t}:{c}", f"{c} ({_base(info['base'])}) {'↑' if hib else '↓'}", hib,
                          _decimals(values, f"cat:{t}:{c}")) for (t, c), info in cats.items()]
        caption = f"Final {suite} score per category of the pretrained task(s) on {stream}."
        notes = (f"Score ({suite}) per category of the pretrained task(s) of stream {stream} after the last task; "
                 f"in brackets the base model's score before fine-tuning.")
        yield "categories", build_table("Pretrained knowledge by category", f"tab:{slug}-categories", caption,
                                        values, columns, reference, notes=notes)


def _final_category(run: Run, task: str, suite: str, category: str) -> float | None:
    info = run.metrics.get("categories", {}).get(task, {}).get(suite, {}).get(category)
    return info["after"][-1] if info else None


def _base(v: float | None) -> str:
    return "–" if v is None else f"base {v:.2f}" if v < 10 else f"base {v:.1f}"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower() or "stream"


def write_table(out_dir: Path, folder: str, table: Table, stem: str) -> tuple[str, str]:
    """``<folder>/tables/<stem>.{md,tex}``; returns both paths (relative to ``out_dir``). Both are
    rendered before either is written, so a label LaTeX cannot print leaves neither behind."""
    md, tex = f"{folder}/tables/{stem}.md", f"{folder}/tables/{stem}.tex"
    md_text, tex_text = to_markdown(table), to_latex(table)
    atomic_write_bytes(inside(out_dir, folder, "tables", f"{stem}.md"), md_text.encode())
    atomic_write_bytes(inside(out_dir, folder, "tables", f"{stem}.tex"), tex_text.encode())
    return md, tex


def write_notes(out_dir: Path, folder: str, stream: str, tables: list[tuple[Table, str, str]]) -> list[str]:
    """``<folder>/tables/notes.{md,tex}``: the notes of every table, in the report's order."""
    named = [(t, Path(md).name) for t, md, _ in tables]
    paths = [f"{folder}/tables/notes.md", f"{folder}/tables/notes.tex"]
    for path, text in zip(paths, (notes_markdown(stream, named), notes_latex(stream, named))):
        atomic_write_bytes(out_dir / path, text.encode())
    return paths


def stream_report(out_dir: Path, stream: str, groups: dict[str, list[Run]], suite: str | None,
                  reference: str = REFERENCE, figures: bool = True, folder: str | None = None,
                  all_orders: dict[str, list[Run]] | None = None) -> StreamReport:
    """Tables, figures and ``numbers.json`` of one stream in one task order (:func:`order_sections`);
    ``all_orders``: the stream's rows in every order, for the table that averages over orders."""
    first = next(iter(groups.values()))[0]
    suite = suite or first.metrics["primary_metric"]
    for runs in groups.values():
        for run in runs:
            run.suite(suite)  # a clear error (file, allowed suites) if any run lacks it
    hib = first.matrix["suites"][suite].get("higher_is_better", True)
    folder = folder or safe_label(stream)
    values = {lab: seed_values(runs, suite) for lab, runs in groups.items()}
    est = {lab: {k: mean_ci(values[lab][k].values()) for k in METRICS + COST} for lab in groups}
    labels = list(groups)
    front = pareto_optimal([(est[lab]["forgetting"].mean, est[lab]["learning_acc"].mean) for lab in labels], hib)
    pareto = dict(zip(labels, front))
    slug = _slug(stream)
    texts = table_texts(stream, suite, hib)
    found, tasks = group_items(groups, suite)  # per-item predictions, read once
    reps = replicates_from_items(found, tasks, f"{stream}|{suite}")  # paired differences: the matched table too
    own = replicates_from_items(found, tasks, f"{stream}|{suite}", shared_items=True)  # each strategy's own value
    intervals = bootstrap_intervals(groups, suite, reference, stream, reps=reps, own=own)  # probe scores, not cost
    specs = [("summary", "Summary", quality_columns(hib, values), pareto, intervals),
             ("cost", "Cost", cost_columns(values), None, None),
             ("per_task", "Per-task final scores", per_task_columns(first, hib, values), None, intervals)]
    tables, numbers = [], {}
    for stem, name, columns, flags, boot in specs:
        caption, notes = texts[stem]
        table = build_table(name, f"tab:{slug}-{stem.replace('_', '-')}", caption, values, columns, reference,
                            flags, intervals=boot, notes=notes, groups=(HEADLINE,) if stem == "summary" else ())
        tables.append((table, *write_table(out_dir, folder, table, stem)))
        numbers[stem] = table.numbers
        if stem == "summary":  # at matched learning: right after the table it qualifies
            matched, numbers["matched"] = matched_table(groups, suite, reference, reps, stream, slug)
            if matched is not None:
                tables.append((matched, *write_table(out_dir, folder, matched, "matched")))
            points, sweep, span = timescale_report(groups, suite, reference, numbers["matched"], stream, slug)
            if sweep is not None:  # the timescale sweep's rows (clbench/bench/timescales.py), same numbers
                tables.append((sweep, *write_table(out_dir, folder, sweep, "timescales")))
                numbers["timescales"] = sweep.numbers
    kl, numbers["kl"], kl_drawn = write_kl_report(out_dir, folder, groups, suite, stream, slug, figures)
    if kl is not None:  # forgetting against the KL from the base model (clbench/eval/kl.py), per mechanism
        tables.append((kl, *write_table(out_dir, folder, kl, "kl")))
    for stem, table in knowledge_tables(groups, suite, slug, stream, reference):
        tables.append((table, *write_table(out_dir, folder, table, stem)))
        numbers[stem] = table.numbers
    numbers["pareto"] = {lab: bool(pareto[lab]) for lab in labels}
    orders = order_numbers(all_orders or groups, suite)  # task orders averaged, their spread (clbench.run.orders)
    tuned = tuning_records(groups)  # what each tuned strategy was swept over and why its setting won
    for stem, table in (("orders", order_table(orders, stream, suite, slug)),
                        ("tuning", tuning_table(tuned, stream, slug))):
        if table is not None:
            tables.append((table, *write_table(out_dir, folder, table, stem)))
    numbers["orders"] = orders
    numbers["tuning"] = tuned
    notes = write_notes(out_dir, folder, stream, tables)
    # allow_nan=False: the numbers come from finite stored results (clbench.results.atomic.read_json refuses
    # NaN), and numbers.json stays standard JSON that any reader parses
    atomic_write_bytes(inside(out_dir, folder, "numbers.json"),
                       (json.dumps({"stream": stream, "suite": suite, "reference": reference, "tables": numbers},
                                   indent=2, sort_keys=True, allow_nan=False) + "\n").encode())
    drawn = (write_figures(out_dir, f"{folder}/figures", groups, suite, est, pareto, reference,
                           numbers["matched"]["frontier"]) if figures else [])
    sweep_figure = write_timescale_figure(out_dir, f"{folder}/figures", points, span, suite) if figures else None
    drawn += [f for f in (sweep_figure, kl_drawn) if f is not None]
    return StreamReport(stream, folder, suite, groups, tables, drawn, tuple(notes), reference)


def compared_reference(groups: dict[str, list[Run]], reference: str, folders: list[str]) -> str:
    """The reference row of one stream: ``reference`` itself, or — when two folders both ran it and it is
    shown once per folder (``clbench.results.aggregate.mark_folders``) — the first given folder's row,
    ``<reference> [<tag>]`` (the marks, the matched-learning frontier and the captions then use that)."""
    if reference in groups:
        return reference
    return next((f"{reference} [{tag}]" for tag in folders if f"{reference} [{tag}]" in groups), reference)


def order_sections(groups: dict[str, list[Run]]) -> dict[str, dict[str, list[Run]]]:
    """``{order: {label: runs}}``, the stream file's order first: a grid run in several task orders
    (``clbench.run.orders``) is reported as one section per order, so that every row is compared with the
    reference *in its own order* — its † marks, its paired intervals and its matched-learning frontier
    (``sft @reversed`` at its learning rates for ``layer_tiers @reversed``). Comparing a reversed row with
    the given order's ``sft`` would pair runs that trained different tasks last."""
    sections: dict[str, dict[str, list[Run]]] = {}
    for label, runs in groups.items():
        sections.setdefault(order_name(runs[0]), {})[label] = runs
    return dict(sorted(sections.items(), key=lambda kv: (kv[0] != GIVEN, kv[0])))


def build_report(paths, out_dir: Path, suite: str | None = None, reference: str = REFERENCE,
                 figures: bool = True, strict: bool = False) -> Path:
    """Write the whole report under ``out_dir``; returns the path of its ``README.md``.

    ``figures=False`` writes tables and index only (seconds instead of tens of seconds). Unreadable and
    unfinished runs are left out, listed in the index and on stderr; ``strict`` makes them an error.
    """
    from clbench.reporting.html import write_html
    from clbench.reporting.index import write_readme

    out_dir = writable_folder(out_dir, "report -o")  # a file, or a folder this user cannot write: nothing is read
    paths = [str(p) for p in paths]
    if out_dir.is_dir():
        remove_leftovers(out_dir)  # temporary files of a report build that was killed
    inventory = load_inventory(paths)
    left_out = inventory.left_out
    if strict and left_out:
        raise ConfigError(", ".join(paths), "--strict: runs that cannot be reported:\n  " + "\n  ".join(left_out))
    for line in left_out:
        print(f"clbench: left out of the report: {line}", file=sys.stderr)
    groups = group_runs(load_runs(paths, inventory))
    streams = sorted({s for s, _ in groups})
    tags = list(folder_tags(paths).values())
    per_stream = {s: {lab: runs for (st, lab), runs in groups.items() if st == s} for s in streams}
    reports = []
    for s in streams:
        for i, (order, section) in enumerate(order_sections(per_stream[s]).items()):
            given = order == GIVEN
            reports.append(stream_report(
                out_dir, s if given else f"{s} @{order}", section, suite,
                compared_reference(section, reference if given else f"{reference} @{order}", tags), figures,
                folder=None if given else safe_label(f"{s}-order-{order}"),
                all_orders=per_stream[s] if i == 0 else {}))
    readme = write_readme(out_dir, paths, reports, reference, left_out)
    write_html(out_dir, paths, reports, reference, left_out)
    written = ["README.md", "index.html"]
    for rep in reports:
        written += [f"{rep.folder}/numbers.json", *(p for _, md, tex in rep.tables for p in (md, tex)), *rep.notes,
                    *(f"{f.stem}.{ext}" for f in rep.figures for ext in ("pdf", "png"))]
    _settle(out_dir, written)
    return readme


def _settle(out_dir: Path, written: list[str]) -> None:
    """Remove what an earlier report in ``out_dir`` wrote and this one did not (a strategy or stream no
    longer in the results), make every file readable for publishing, and record the new list."""
    manifest = out_dir / MANIFEST
    root = out_dir.resolve()
    if manifest.exists():
        for rel in set(manifest.read_text().splitlines()) - set(written):
            stale = (out_dir / rel).resolve()
            if rel and root in stale.parents:  # never outside the report folder
                stale.unlink(missing_ok=True)
                for folder in stale.parents:  # and the folders this leaves empty
                    if folder == root or any(folder.iterdir()):
                        break
                    folder.rmdir()
    for rel in written:
        os.chmod(out_dir / rel, 0o644)
    atomic_write_bytes(manifest, ("\n".join(sorted(written)) + "\n").encode())
