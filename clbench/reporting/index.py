"""The report's index: what was run and how every number is defined, then every table and figure.

The index is built once as a list of blocks (:func:`index_blocks`) and rendered twice — Markdown here
(``README.md``), HTML in :mod:`clbench.reporting.html` — so the two never disagree. It states, from
the runs' own ``config.json`` and ``provenance.json``: the stream (tasks, source, fingerprint), the
model, the training settings, strategies and seeds, package versions and git revisions; the metric
formulas are the docstring of :mod:`clbench.results.metrics` and the statistics that of
:mod:`clbench.reporting.stats`, quoted rather than retyped so they cannot drift from the code.
"""

from __future__ import annotations

import inspect
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from clbench.reporting.figures import FigureFile
from clbench.reporting.tables import Table, order_labels, to_markdown
from clbench.results.files import atomic_write_bytes


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Para:
    text: str  # may hold `code` spans


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Pre:
    text: str


@dataclass(frozen=True)
class TableBlock:
    table: Table
    md: str
    tex: str


@dataclass(frozen=True)
class FigureBlock:
    figure: FigureFile


def _settings(d: dict, drop=()) -> str:
    return ", ".join(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in sorted(d.items()) if k not in drop)


def _counted(values) -> str:
    """``a`` when every run agrees, else ``a (2 runs), b (1 run)``."""
    counts = Counter(values)
    if len(counts) == 1:
        return str(next(iter(counts)))
    return ", ".join(f"{v} ({c} run{'s' if c > 1 else ''})" for v, c in sorted(counts.items(), key=lambda x: str(x[0])))


def _docstring_body(module) -> str:
    """A module docstring without its first paragraph (the one-line summary)."""
    doc = inspect.cleandoc(module.__doc__ or "")
    return doc.split("\n\n", 1)[1].strip() if "\n\n" in doc else doc


def stream_blocks(rep, reference: str) -> list:
    runs = [r for rs in rep.groups.values() for r in rs]
    first = runs[0]
    s = first.config["stream"]
    tasks = ", ".join(f"{t} (pretrained: learned by the base model)" if p else t
                      for t, p in zip(s["tasks"], first.pretrained))
    suites = first.matrix["suites"]
    kind = suites[rep.suite].get("kind", "?")
    direction = "higher is better" if suites[rep.suite].get("higher_is_better", True) else "lower is better"
    model_cfg = _counted(_settings(r.config.get("model", {}), ("device",)) for r in runs)
    train_cfg = _counted(_settings(r.config.get("train", {}), ("threads",)) for r in runs)
    items = [f"Tasks, in order: {tasks}.",
             f"Stream source `{s.get('source')}`, fingerprint `{s.get('fingerprint')}`.",
             (f"Probe suite in the tables and figures: `{rep.suite}` ({kind}, {direction}); suites stored: "
              f"{', '.join(f'`{x}`' for x in suites)} (`clbench report --suite NAME` for another)."),
             f"Base model: `{_counted(r.config.get('base_model') for r in runs)}`; model settings: {model_cfg}.",
             f"Training settings: {train_cfg}."]
    if len({_settings(r.config.get('train', {}), ('threads',)) for r in runs}) > 1:
        if any(t.name == "Tuning" for t, _, _ in rep.tables):
            items.append("Training settings differ between strategies because each was tuned on validation "
                         "probe items (table Tuning); the tables score the chosen settings on the test items.")
        else:
            items.append("Warning: strategies were trained with different settings (see above); compare with care.")
    roles = sorted({(r.config.get("probe_split") or {}).get("role", "all items") for r in runs})
    if len(roles) > 1:
        items.append(f"Warning: the rows were scored on different probe items ({', '.join(roles)}): tuned "
                     "strategies on the test items only, the others on every item; compare with care.")
    strategies = [f"`{lab}`: strategy `{rs[0].config['strategy']['name']}`, options "
                  f"`{json.dumps(rs[0].config['strategy'].get('options', {}), sort_keys=True)}`, seeds "
                  f"{', '.join(str(r.seed) for r in rs)} (n = {len(rs)})"
                  for lab, rs in ((lab, rep.groups[lab]) for lab in order_labels(rep.groups, reference))]
    blocks: list = [Heading(2, f"Stream `{rep.stream}`"), Bullets(tuple(items)), Para("Strategies and seeds:"),
                    Bullets(tuple(strategies)), Heading(3, "Tables")]
    for t, md, tex in rep.tables:
        blocks += [TableBlock(t, md, tex), *([Para(f"Notes: {t.notes}")] if t.notes else [])]
    blocks.append(Para(f"Every number behind these tables (means, half-widths, n, p-values, per-seed values): "
                       f"`{rep.folder}/numbers.json`; the notes of every table in one file, for a paper's "
                       f"appendix: `{rep.folder}/tables/notes.md` and `notes.tex`."))
    if rep.figures:
        blocks += [Heading(3, "Figures"), *(FigureBlock(f) for f in rep.figures)]
    return blocks


def software_blocks(runs) -> list:
    gits = Counter((r.provenance.get("git", {}).get("commit"), r.provenance.get("git", {}).get("dirty")) for r in runs)
    git_items = [f"`{c}`{' with uncommitted changes' if d else ''}: {n} run{'s' if n > 1 else ''}" if c else
                 f"not from a git checkout: {n} run{'s' if n > 1 else ''}" for (c, d), n in sorted(gits.items(), key=str)]
    packages = sorted({p for r in runs for p in r.provenance.get("packages", {})})
    pkg_items = [f"{p} {_counted(r.provenance.get('packages', {}).get(p) or 'not installed' for r in runs)}"
                 for p in packages]
    env = [f"Python {_counted(r.provenance.get('python') for r in runs)}",
           f"platform {_counted(r.provenance.get('platform') for r in runs)}",
           f"torch threads {_counted(r.provenance.get('torch_threads') for r in runs)}",
           f"accelerator {_counted(r.provenance.get('cuda') or 'none (CPU)' for r in runs)}"]
    return [Heading(2, "Software and revisions behind every number"), Para("clbench git revision:"),
            Bullets(tuple(git_items)), Para("Package versions:"), Bullets(tuple(pkg_items)),
            Para("Environment:"), Bullets(tuple(env))]


def checks_blocks(runs, left_out) -> list:
    """Runs the report leaves out (unreadable, unfinished) and runs whose training loss did not fall."""
    blocks: list = []
    if left_out:
        blocks += [Heading(2, "Runs left out"),
                   Para("These run folders are not in any table (`clbench report --strict` refuses them):"),
                   Bullets(tuple(f"`{line}`" for line in left_out))]
    flat = [(r, r.metrics.get("loss_check", {}).get("not_falling", [])) for r in runs]
    flat = [(r, tasks) for r, tasks in flat if tasks]
    if flat:
        blocks += [Heading(2, "Runs whose training loss did not fall"),
                   Para("On these tasks the mean loss of the last quarter of steps was not below that of the "
                        "first quarter (`loss_check` in `metrics.json`): a learning rate far too high, or "
                        "nothing learnable. Their numbers are in the tables; read them with that in mind."),
                   Bullets(tuple(f"`{r.label}` seed {r.seed} (`{r.path}`): {', '.join(tasks)}" for r, tasks in flat))]
    return blocks


def index_blocks(paths, reports, reference: str, left_out=()) -> list:
    from clbench.reporting import stats
    from clbench.results import metrics

    runs = [r for rep in reports for rs in rep.groups.values() for r in rs]
    experiments = sorted({r.config.get("experiment", "?") for r in runs})
    blocks: list = [
        Heading(1, f"clbench report: {', '.join(experiments)}"),
        Para(f"Built by `clbench report {' '.join(paths)}` from {len(runs)} finished runs on "
             f"{len(reports)} stream{'s' if len(reports) > 1 else ''}. Every number is computed from the stored "
             f"result files listed under Runs; nothing was retrained. Each table is also written as LaTeX "
             f"beside its Markdown (a float that compiles in a two-column paper with booktabs; tabularx where "
             f"a column wraps), each figure as PDF (vector) and PNG. Significance marks compare "
             f"with `{reference}` on matching seeds."),
    ]
    if any(r.tagged for r in runs):
        chosen = "; ".join(f"`{rep.reference}` on `{rep.stream}`" for rep in reports if rep.reference != reference)
        blocks.append(Para("Two or more of the given folders ran the same strategy label with the same seed: such a "
                           "label is shown once per folder, `<label> [<folder>]`, the folder named by the shortest "
                           "trailing part of its path that no other given folder ends with."
                           + (f" The marks then compare with the first given folder's row: {chosen}." if chosen
                              else "")))
    for rep in reports:
        blocks += stream_blocks(rep, rep.reference)
    blocks += checks_blocks(runs, left_out)
    blocks += software_blocks(runs)
    blocks += [Heading(2, "Metric definitions (from clbench/results/metrics.py)"), Pre(_docstring_body(metrics)),
               Heading(2, "Statistics (from clbench/reporting/stats.py)"), Pre(_docstring_body(stats)),
               Heading(2, "Runs")]
    blocks.append(Bullets(tuple(f"`{lab}` on `{rep.stream}`, seed {r.seed}: `{r.path}`"
                                for rep in reports for lab, rs in rep.groups.items() for r in rs)))
    return blocks


# --- Markdown ----------------------------------------------------------------------------------------
def to_markdown_doc(blocks) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {x}" for x in b.items))
        elif isinstance(b, Pre):
            out.append(f"```text\n{b.text}\n```")
        elif isinstance(b, TableBlock):
            out.append(to_markdown(b.table).rstrip("\n") + f"\n\nFiles: [Markdown]({b.md}) · [LaTeX]({b.tex})")
        elif isinstance(b, FigureBlock):
            f = b.figure
            out.append(f"![{f.title}]({f.stem}.png)\n\n**{f.title}.** {f.caption} [PDF]({f.stem}.pdf)")
    return "\n\n".join(out) + "\n"


def write_readme(out_dir: Path, paths, reports, reference: str, left_out=()) -> Path:
    path = Path(out_dir) / "README.md"
    atomic_write_bytes(path, to_markdown_doc(index_blocks(paths, reports, reference, left_out)).encode())
    return path
