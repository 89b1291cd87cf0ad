"""Progress of a grid whose runs execute elsewhere (``jobs`` > 1, Ray): which task and step each running run
is at, and when the grid should end.

Each run reports through a small file in its own directory, ``<run>/progress.json`` (:class:`RunProgress`,
written atomically at each task's start and end and at most every :data:`WRITE_SECONDS` while a task
trains, removed when the run finishes); the parent polls the files of its unfinished runs
(:class:`GridWatch`) and prints one status line at most every :data:`STATUS_SECONDS`. A file rather than a
queue or a ``multiprocessing.Manager``: the run directory is already where every executor's workers write
(a Ray cluster's nodes through the shared results folder its executor requires), so one mechanism serves
the process pool and Ray alike, needs no server process, and a worker that dies or a Ray task that is
retried just leaves or rewrites a file. A file left by an earlier, killed attempt is told apart by its
``started`` time (before this grid began; the clocks of the parent and the workers are assumed to agree,
as on one machine or NTP-synchronised nodes).

The ETA (:func:`eta_seconds`) prices the work left — each unfinished run's optimizer steps and rows to
evaluate — at the mean seconds per step and per evaluated row measured so far in this grid (the tasks
finished since it began, as the runs' files last reported them), shared among the workers; it is
"unknown" until a task has finished. It leaves out what a run does besides (loading the model, the fixed
rows, a strategy's before/after-task passes), and counts steps for every queued run, including one whose
strategy turns out not to train (``frozen``).
"""

from __future__ import annotations

import json
import sys
import time
from datetime import timedelta
from pathlib import Path

from clbench.results.files import RunFiles, atomic_write_json

# A running task rewrites its progress file at most this often: step times range from milliseconds (the
# micro model) to seconds (a real one), so a step count would either write (and fsync) hundreds of times a
# second or leave the status minutes behind; 2 s keeps it fresh for a parent that prints every few seconds.
WRITE_SECONDS = 2.0
# The parent prints a status line at most this often: often enough to watch, and a grid of hours run
# under nohup adds a few hundred lines an hour to its log, not thousands.
STATUS_SECONDS = 10.0
# How long the parent waits for a run to finish before it looks at the progress files again.
POLL_SECONDS = 2.0


class RunProgress:
    """The worker's side: where one run is, written to ``<run>/progress.json`` (:meth:`record`)."""

    def __init__(self, path: Path, pretrained: list[bool], steps_per_task: int):
        self.path, self.pretrained, self.steps = Path(path), list(pretrained), steps_per_task
        self.started = time.time()
        self.phase, self.task, self.step = "setup", 0, 0
        self.trains = self.evaluates = True
        self.train_seconds, self.trained_steps, self.eval_seconds, self.eval_rows = 0.0, 0, 0.0, 0
        self.written = float("-inf")
        self.write()

    def record(self) -> dict:
        """What the file holds: the phase (setup | train | eval), the task (from 0) and step, what is left,
        and what the tasks finished by this process measured."""
        later = [t for t in range(self.task, len(self.pretrained)) if not self.pretrained[t]]
        steps_left = len(later) * self.steps if self.trains else 0
        if self.phase in ("train", "eval") and self.trains and self.task < len(self.pretrained):
            steps_left -= self.step if not self.pretrained[self.task] else 0
        return {"started": self.started, "phase": self.phase, "task": self.task, "tasks": len(self.pretrained),
                "step": self.step, "steps": self.steps, "trains": self.trains,
                "steps_left": steps_left, "rows_left": len(later) if self.evaluates else 0,
                "train_seconds": self.train_seconds, "trained_steps": self.trained_steps,
                "eval_seconds": self.eval_seconds, "eval_rows": self.eval_rows}

    def write(self) -> None:
        atomic_write_json(self.path, self.record())
        self.written = time.monotonic()

    def begin(self, start: int, trains: bool, evaluates: bool) -> None:
        """The strategy is set and the run resumes at task ``start``; ``evaluates``: its rows are scored
        (not copied from the base row)."""
        self.task, self.trains, self.evaluates = start, trains, evaluates
        self.write()

    def training(self, t: int) -> None:
        self.phase, self.task, self.step = "train", t, 0
        self.write()

    def step_done(self, step: int) -> None:
        """A step of the task in training ended (written if :data:`WRITE_SECONDS` have passed)."""
        self.step = step
        if time.monotonic() - self.written >= WRITE_SECONDS:
            self.write()

    def evaluating(self, t: int) -> None:
        self.phase, self.task, self.step = "eval", t, self.steps if self.trains else 0
        self.write()

    def task_done(self, t: int, train_seconds: float, steps: int, eval_seconds: float | None) -> None:
        """Task ``t``'s row is written: its training seconds and steps, its evaluation seconds (``None``: a
        copied row, nothing scored)."""
        if steps:
            self.train_seconds += train_seconds
            self.trained_steps += steps
        if eval_seconds is not None:
            self.eval_seconds += eval_seconds
            self.eval_rows += 1
        self.phase, self.task, self.step = "train", t + 1, 0
        self.write()

    def close(self) -> None:
        """The run finished (or failed): a finished run directory holds no progress file."""
        self.path.unlink(missing_ok=True)


def read_progress(path: Path) -> dict | None:
    """A run's progress record, or ``None`` when it has none (not started, finished, or unreadable)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def queued_work(files: RunFiles, pretrained: list[bool], steps_per_task: int) -> tuple[int, int]:
    """``(steps, rows)`` a run that has not started yet will do: its unfinished trained tasks (none if it
    is finished, so it will be skipped)."""
    if files.done.exists():
        return 0, 0
    start = files.finished_tasks(len(pretrained))
    n = sum(not p for p in pretrained[start:])
    return n * steps_per_task, n


def rates(records: list[dict]) -> tuple[float | None, float | None]:
    """Mean seconds per optimizer step and per evaluated row over the finished tasks of ``records``."""
    steps, rows = sum(r["trained_steps"] for r in records), sum(r["eval_rows"] for r in records)
    per_step = sum(r["train_seconds"] for r in records) / steps if steps else None
    per_row = sum(r["eval_seconds"] for r in records) / rows if rows else None
    return per_step, per_row


def eta_seconds(left: list[tuple[int, int]], per_step: float | None, per_row: float | None,
                workers: int) -> float | None:
    """Seconds until the grid ends: each unfinished run's ``(steps, rows)`` left priced at ``per_step`` and
    ``per_row``, the total shared by ``workers`` (at most one per run), but never less than the longest
    run's own time. ``None`` when work is left that has no measured price."""
    seconds = []
    for steps, rows in left:
        if (steps and per_step is None) or (rows and per_row is None):
            return None
        seconds.append(steps * (per_step or 0.0) + rows * (per_row or 0.0))
    if not seconds:
        return 0.0
    return max(sum(seconds) / max(1, min(workers, len(seconds))), max(seconds))


def where(rec: dict) -> str:
    """``task i/T step s/S`` (``eval`` added while it scores the task's row), or ``setup``."""
    if rec["phase"] == "setup":
        return "setup"
    if rec["task"] >= rec["tasks"]:
        return "finishing"
    out = f"task {rec['task'] + 1}/{rec['tasks']}"
    if rec["trains"]:
        out += f" step {rec['step']}/{rec['steps']}"
    return out + (" eval" if rec["phase"] == "eval" else "")


def status_line(done: int, total: int, running: list[tuple[str, dict]], eta: float | None) -> str:
    """``runs 3/8 done | sft seed 0: task 2/4 step 40/100 | ... | ETA 0:12:05``."""
    eta_text = "unknown" if eta is None else str(timedelta(seconds=round(eta)))
    return " | ".join([f"runs {done}/{total} done", *(f"{title}: {where(rec)}" for title, rec in running),
                       f"ETA {eta_text}"])


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class GridWatch:
    """The parent's side: polls the progress files of the unfinished runs of ``jobs``
    (``clbench.run.executors.Job``) and prints the grid's status at most every ``every`` seconds
    (:data:`STATUS_SECONDS` if not given)."""

    def __init__(self, jobs: list, workers: int, write=_stderr, every: float | None = None):
        self.jobs, self.workers, self.write = jobs, workers, write
        self.every = STATUS_SECONDS if every is None else every
        self.since = time.time()
        self.printed = float("-inf")
        self.done: set[int] = set()
        self.seen: dict[int, dict] = {}  # the last record read of each run started in this grid
        self.queued = [queued_work(job.spec.files, job.spec.stream.pretrained_flags,
                                   job.spec.cfg.train.steps_per_task) for job in jobs]

    def finished(self, i: int) -> None:
        self.done.add(i)

    def poll(self) -> None:
        for i, job in enumerate(self.jobs):
            if i not in self.done:
                rec = read_progress(job.spec.files.progress)
                if rec is not None and rec.get("started", 0) >= self.since:
                    self.seen[i] = rec

    def line(self) -> str:
        unfinished = [i for i in range(len(self.jobs)) if i not in self.done]
        left = [(self.seen[i]["steps_left"], self.seen[i]["rows_left"]) if i in self.seen else self.queued[i]
                for i in unfinished]
        eta = eta_seconds(left, *rates(list(self.seen.values())), self.workers)
        running = [(self.jobs[i].title, self.seen[i]) for i in unfinished if i in self.seen]
        return status_line(len(self.done), len(self.jobs), running, eta)

    def tick(self) -> None:
        """Print the status if ``every`` seconds have passed since the last."""
        if time.monotonic() - self.printed >= self.every:
            self.poll()
            self.write(self.line())
            self.printed = time.monotonic()
