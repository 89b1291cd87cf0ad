"""Progress of a grid run elsewhere (``clbench.run.grid_progress``): the run's progress file step by step,
the TensorBoard loss on disk while a task trains, the ETA and the status line on hand-made numbers."""

import json
from types import SimpleNamespace

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from clbench.results import tensorboard
from clbench.results.files import RunFiles, atomic_write_json
from clbench.run import grid_progress
from clbench.run.grid import run_grid
from clbench.run.grid_progress import GridWatch, RunProgress, eta_seconds, rates, status_line
from tests.conftest import micro_config


def losses_on_disk(run_root) -> int:
    """How many ``train/loss`` scalars the run's event files hold now."""
    if not (run_root / "tensorboard").exists():
        return 0
    acc = EventAccumulator(str(run_root / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return len(acc.Scalars("train/loss")) if "train/loss" in acc.Tags()["scalars"] else 0


def test_progress_file_follows_every_step_and_the_loss_is_flushed_while_a_task_trains(
        micro_cache, micro_base_dir, tmp_path, monkeypatch):
    # every step written (no 2 s throttle), the event file flushed every 4 steps; micro stream: task 0
    # ("general") is pretrained, tasks 1 and 2 train 6 steps each
    monkeypatch.setattr(grid_progress, "WRITE_SECONDS", 0.0)
    monkeypatch.setattr(tensorboard, "FLUSH_EVERY_STEPS", 4)
    written, on_disk = [], {}

    def spy(path, obj):
        if path.name == "progress.json":
            written.append(dict(obj))
            if obj["phase"] == "train" and (obj["step"] == 4 or (obj["step"] == 0 and obj["task"] == 2)):
                on_disk[(obj["task"], obj["step"])] = losses_on_disk(path.parent)
        atomic_write_json(path, obj)

    monkeypatch.setattr(grid_progress, "atomic_write_json", spy)
    cfg = micro_config(tmp_path, cache_dir=micro_cache)
    ((path, status),) = run_grid(cfg, progress=False, echo=lambda *a: None)
    files = RunFiles(path)
    assert status == "done" and files.done.exists() and not files.progress.exists()  # removed when finished

    def state(phase, task, step, steps_left, rows_left, trained, rows):
        return {"phase": phase, "task": task, "step": step, "steps_left": steps_left, "rows_left": rows_left,
                "trained_steps": trained, "eval_rows": rows}

    expected = [state("setup", 0, 0, 12, 2, 0, 0), state("setup", 0, 0, 12, 2, 0, 0),  # opened; strategy set
                state("train", 1, 0, 12, 2, 0, 0),  # task 0 (pretrained) took the base row
                state("train", 1, 0, 12, 2, 0, 0),  # task 1 starts training
                *(state("train", 1, s, 12 - s, 2, 0, 0) for s in range(1, 7)),
                state("eval", 1, 6, 6, 2, 0, 0), state("train", 2, 0, 6, 1, 6, 1), state("train", 2, 0, 6, 1, 6, 1),
                *(state("train", 2, s, 6 - s, 1, 6, 1) for s in range(1, 7)),
                state("eval", 2, 6, 0, 1, 6, 1), state("train", 3, 0, 0, 0, 12, 2)]
    assert [{k: w[k] for k in expected[0]} for w in written] == expected
    rows = [json.loads(files.after(t).read_text()) for t in (1, 2)]
    last = written[-1]
    assert (last["tasks"], last["steps"], last["trains"]) == (3, 6, True)
    assert last["train_seconds"] == pytest.approx(sum(r["train_seconds"] for r in rows))
    assert last["eval_seconds"] == pytest.approx(sum(r["seconds"] for r in rows))
    # at step 4 of each task (a flush) the event file holds exactly the steps so far; a new task starts
    # with all of the last one's
    assert on_disk == {(1, 4): 4, (2, 0): 6, (2, 4): 10}
    assert losses_on_disk(path) == 12  # and each step once at the end (not again from the task's log)


def test_eta_prices_the_work_left_at_the_measured_rates():
    # two runs' finished tasks: 100 steps in 50 s (0.5 s a step), 3 rows scored in 12 s (4 s a row)
    measured = [{"train_seconds": 30.0, "trained_steps": 60, "eval_seconds": 8.0, "eval_rows": 2},
                {"train_seconds": 20.0, "trained_steps": 40, "eval_seconds": 4.0, "eval_rows": 1}]
    per_step, per_row = rates(measured)
    assert (per_step, per_row) == (0.5, 4.0)
    left = [(100, 2), (100, 2), (40, 1)]  # 58 s, 58 s and 24 s of work
    assert eta_seconds(left, per_step, per_row, workers=2) == 70.0  # 140 s shared by 2 workers
    assert eta_seconds(left, per_step, per_row, workers=4) == 58.0  # 3 workers busy: the longest run's 58 s
    assert eta_seconds([], per_step, per_row, workers=2) == 0.0
    nothing = [{"train_seconds": 0.0, "trained_steps": 0, "eval_seconds": 0.0, "eval_rows": 0}]
    assert rates(nothing) == (None, None)
    assert eta_seconds(left, *rates(nothing), workers=2) is None  # no task finished yet: unknown
    assert eta_seconds([(0, 0)], None, None, workers=2) == 0.0  # nothing left needs no rate


def test_status_line_of_two_running_runs():
    training = {"phase": "train", "task": 1, "tasks": 3, "step": 4, "steps": 6, "trains": True}
    scoring = {"phase": "eval", "task": 2, "tasks": 3, "step": 6, "steps": 6, "trains": True}
    frozen = {"phase": "eval", "task": 0, "tasks": 3, "step": 0, "steps": 6, "trains": False}
    assert status_line(1, 4, [("sft seed 0", training), ("ewc seed 1", scoring)], 4000.4) == \
        "runs 1/4 done | sft seed 0: task 2/3 step 4/6 | ewc seed 1: task 3/3 step 6/6 eval | ETA 1:06:40"
    assert status_line(0, 2, [("frozen seed 0", frozen), ("sft seed 0", {"phase": "setup"})], None) == \
        "runs 0/2 done | frozen seed 0: task 1/3 eval | sft seed 0: setup | ETA unknown"


def fake_job(root, title):
    """What the parent reads of a job: its files, its stream's tasks (task 0 pretrained), steps per task."""
    stream = SimpleNamespace(pretrained_flags=[True, False, False])
    spec = SimpleNamespace(files=RunFiles(root), stream=stream, cfg=SimpleNamespace(train=SimpleNamespace(steps_per_task=6)))
    return SimpleNamespace(spec=spec, title=title)


def test_grid_watch_reads_the_running_runs_and_ignores_an_earlier_attempts_file(tmp_path, monkeypatch):
    monkeypatch.setattr(grid_progress, "WRITE_SECONDS", 0.0)
    jobs = [fake_job(tmp_path / name, title) for name, title in
            (("a", "sft seed 0"), ("b", "ewc seed 1"), ("c", "sft seed 1"), ("d", "ewc seed 0"))]
    for job in jobs:
        job.spec.files.root.mkdir()
    (tmp_path / "d" / "DONE").write_bytes(b"")  # finished before: skipped
    lines = []
    watch = GridWatch(jobs, workers=2, write=lines.append, every=3600)
    # c was killed in an earlier grid: its file says it was training task 2, but it started before this grid
    atomic_write_json(jobs[2].spec.files.progress, {**RunProgress(tmp_path / "old.json", [True, False, False], 6)
                                                   .record(), "started": watch.since - 60, "task": 2})
    a = RunProgress(jobs[0].spec.files.progress, [True, False, False], 6)
    a.begin(0, trains=True, evaluates=True)
    a.task_done(0, 0.0, 0, None)
    a.training(1)
    for s in range(1, 5):
        a.step_done(s)  # 8 steps and 2 rows left
    b = RunProgress(jobs[1].spec.files.progress, [True, False, False], 6)
    b.begin(0, trains=True, evaluates=True)
    b.task_done(0, 0.0, 0, None)
    b.training(1)
    b.evaluating(1)
    b.task_done(1, 6.0, 6, 2.0)  # 1 s a step, 2 s a row
    b.training(2)
    b.evaluating(2)  # no step and 1 row left
    watch.finished(3)
    watch.tick()
    watch.tick()  # within `every` of the first: not printed
    # left: a 8 x 1 + 2 x 2 = 12 s, b 2 s, c (queued: 12 steps, 2 rows) 16 s; 30 s over 2 workers is 15 s,
    # less than c's own 16 s
    assert lines == ["runs 1/4 done | sft seed 0: task 2/3 step 4/6 | ewc seed 1: task 3/3 step 6/6 eval | ETA 0:00:16"]
    a.close()
    assert not jobs[0].spec.files.progress.exists()
