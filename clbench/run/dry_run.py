"""``clbench run --dry-run``: the grid ``clbench run`` would run, resolved the same way, with nothing built,
loaded or written.

The grid is planned as :func:`clbench.run.grid.run_grid` plans it (``plan``, ``parse_orders``,
``plan_settings``, ``grid_jobs``), every check included, so a config the dry run accepts is one ``run``
accepts. Each run's directory then says what ``run`` would do with it: a ``DONE`` is skipped, a
``config.json`` without ``DONE`` is resumed, anything else is run. Tuning candidates are counted the same
way (they are not run: which setting wins is not known before they are).

The time estimate reads the stored rows (``eval/after_<t>.json``) of the finished runs of the experiment on
this stream: a task's time is its ``train_seconds`` plus, for a trained task, its evaluation ``seconds``
(what ``metrics.json``'s cost adds up). A run to do is estimated as the mean over finished runs of its row's
label of the tasks it has left (a resumed run, those after its last written row), else as that mean over
every finished run of the experiment; building the base model and tuning are not included.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from clbench.config.experiment import ExperimentConfig
from clbench.data.streams import Stream
from clbench.results.files import RunFiles, results_path
from clbench.run.checks import check_logging, check_outputs
from clbench.run.grid import grid_jobs
from clbench.run.orders import parse_orders
from clbench.run.plan import plan, run_spec
from clbench.run.probe_split import scores_test_items, split_stream
from clbench.run.sweep import Tuned, plan_settings, tuning_config


@dataclass
class Row:
    """One grid row as ``run`` would run it: its label, strategy, learning rate and runs by what happens to them."""

    label: str
    strategy: str
    lr: str
    todo: list[int] = field(default_factory=list)  # per run to do or to resume: its tasks already written
    resume: int = 0
    skip: int = 0
    candidates: tuple[int, int, int] | None = None  # tuning: candidate runs (to do, to resume, done)


def run_status(files: RunFiles) -> str:
    """``"skip"`` (``DONE``), ``"resume"`` (``config.json`` without ``DONE``) or ``"do"``."""
    if files.done.exists():
        return "skip"
    return "resume" if files.config.exists() else "do"


def planned_base_model(cfg: ExperimentConfig, stream: Stream) -> tuple[Path | None, str]:
    """The base model's checkpoint folder where it is known without building or converting anything, and
    a line saying what it is."""
    if cfg.model.name:
        return None, f"named model {cfg.model.name} (converted into {cfg.resolved_cache_dir()} on first use)"
    if cfg.model.path:
        return Path(cfg.model.path), f"checkpoint {cfg.model.path}"
    from clbench.modeling.tiny import base_model_path

    target = base_model_path(cfg.model, stream, cfg.resolved_cache_dir())
    state = "cached" if (target / "build.json").exists() else f"to build: {cfg.model.pretrain_steps} pretraining steps"
    return target, f"embedded model {target} ({state})"


def task_seconds(files: RunFiles, n_tasks: int) -> list[float] | None:
    """Seconds of each task of a finished run from its stored rows; ``None`` where a row is missing or
    unreadable (such a run is left out of the estimate, not an error: a dry run judges no results)."""
    out = []
    for t in range(n_tasks):
        try:
            row = json.loads(files.after(t).read_text())
            out.append(float(row.get("train_seconds", 0.0)) + (0.0 if row.get("pretrained") else float(row["seconds"])))
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None
    return out


def stored_timings(cfg: ExperimentConfig, stream: Stream) -> dict[str, list[list[float]]]:
    """``{label: [per-task seconds of each finished run]}`` under ``<results>/<experiment>/<stream>/``."""
    root = results_path(cfg.results_dir, cfg.name, stream.name)
    timings: dict[str, list[list[float]]] = {}
    if not root.is_dir():
        return timings
    for done in sorted(root.glob("*/**/DONE")):
        seconds = task_seconds(RunFiles(done.parent), len(stream.tasks))
        if seconds is not None:
            timings.setdefault(done.relative_to(root).parts[0], []).append(seconds)
    return timings


def estimate(written: list[int], runs: list[list[float]]) -> float:
    """Seconds of the runs to do (``written``: each one's tasks already written) from finished runs' task times."""
    return sum(sum(sum(r[k:]) for r in runs) / len(runs) for k in written)


def dry_run(cfg: ExperimentConfig, echo=print) -> list[Row]:
    """Plan the grid as ``run`` would and print what it would do; builds, loads and writes nothing."""
    stream, entries = plan(cfg)
    orders = parse_orders(cfg.orders, stream)
    check_outputs(cfg)
    check_logging(cfg.log)
    pinned, plans = plan_settings(cfg, entries, stream)
    base_dir, base_text = planned_base_model(cfg, stream)
    base_dir = base_dir or Path()  # a run's files do not depend on it: only RunSpec.base_dir, never used here
    split = scores_test_items(cfg, stream.name, bool(pinned or plans))  # the items run_grid's runs score
    T = len(stream.tasks)
    rows = []
    for entry in entries:
        label = entry.spec.run_label
        resolved = pinned[label][0] if label in pinned else entry
        lr = f"{resolved.config(cfg).train.lr:g}"
        row = Row(label, entry.spec.name, lr)
        if label in plans:
            space, candidates = plans[label]
            if "train.lr" in space:
                row.lr = "tuned from " + ", ".join(f"{v:g}" if isinstance(v, float) else str(v)
                                                    for v in space["train.lr"])
            val = split_stream(stream, "validation", cfg.tuning.val_fraction, cfg.tuning.split_seed)
            states = [run_status(run_spec(tuning_config(cfg), val, c, cfg.tuning.seed, base_dir).files)
                      for _, c in candidates]
            row.candidates = tuple(states.count(s) for s in ("do", "resume", "skip"))
        for job in grid_jobs(cfg, stream, [Tuned(resolved, None)], base_dir, split):
            state = run_status(job.spec.files)
            if state == "skip":
                row.skip += 1
            else:
                row.resume += state == "resume"
                row.todo.append(job.spec.files.finished_tasks(T))
        rows.append(row)
    echo_summary(cfg, stream, rows, len(orders), base_text, stored_timings(cfg, stream), echo)
    return rows


def duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds} s"
    h, m = divmod(seconds // 60, 60)
    return f"{h} h {m} min" if h else f"{m} min"


def echo_summary(cfg: ExperimentConfig, stream: Stream, rows: list[Row], n_orders: int, base_text: str,
                 timings: dict[str, list[list[float]]], echo) -> None:
    every = [r for runs in timings.values() for r in runs]
    echo(f"clbench: dry run of experiment '{cfg.name}' on stream '{stream.name}': {len(rows)} rows x {n_orders} "
         f"order{'' if n_orders == 1 else 's'} x {len(cfg.seeds)} seed{'' if len(cfg.seeds) == 1 else 's'}; "
         f"base model: {base_text}")
    total, known = 0.0, True
    for row in rows:
        todo = len(row.todo) - row.resume
        line = (f"  {row.label}: strategy {row.strategy}, lr {row.lr}; {todo} to do, {row.resume} to resume, "
                f"{row.skip} to skip")
        if row.candidates is not None:
            line += (f"; tuning: {sum(row.candidates)} candidates ({row.candidates[0]} to do, {row.candidates[1]} "
                     f"to resume, {row.candidates[2]} done)")
        if row.todo:
            own = timings.get(row.label)
            runs, whose = (own, f"{len(own)} finished {row.label} run{'' if len(own) == 1 else 's'}") if own else (
                every, f"{len(every)} finished run{'' if len(every) == 1 else 's'} of the experiment")
            if runs:
                seconds = estimate(row.todo, runs)
                total += seconds
                line += f"; about {duration(seconds)} (mean of {whose})"
            else:
                known = False
                line += "; no stored timings"
        echo(line)
    todo = sum(len(r.todo) - r.resume for r in rows)
    resume, skip = sum(r.resume for r in rows), sum(r.skip for r in rows)
    time_text = ("no run" if not todo + resume else "no stored timings" if not known and not total else
                 f"about {duration(total)} of run time{'' if known else ' for the rows with stored timings'}"
                 + (f" (about {duration(total / cfg.jobs)} with {cfg.jobs} jobs)" if cfg.jobs > 1 else "")
                 + "; building the base model and tuning not included")
    tuning = [r.candidates for r in rows if r.candidates is not None]
    if tuning:
        time_text = (f"tuning first: {sum(c[0] + c[1] for c in tuning)} of {sum(map(sum, tuning))} candidate runs "
                     f"to do or resume; then {time_text}")
    echo(f"clbench: {todo} runs to do, {resume} to resume, {skip} to skip; {time_text}")
    echo("clbench: dry run: nothing was built, loaded or written (clbench run without --dry-run runs it)")
