"""Fault injection: a real ``clbench run`` killed with SIGKILL at chosen points, writes that fail
halfway, and two writers on one results directory.

Kill points come from the ``CLBENCH_FAULT`` test hook (``clbench.faults``): the process sends itself
SIGKILL there, so no cleanup runs — as with ``kill -9``. After every kill the test checks what is on
disk; the last rerun must leave a run directory byte-for-byte equal to an uninterrupted run's (wall
times aside), with no temporary file and no lock left.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from clbench.errors import ConfigError
from tests.cli_helpers import micro_args, run_contents, tree
from tests.conftest import micro_config

ROOT = Path(__file__).resolve().parent.parent
STEPS = {"steps_per_task": 3}


def clbench(results: Path, cache: Path, report: Path | None = None, fault: str | None = None,
            extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``python -m clbench.cli run`` on the micro stream (3 steps a task) in a fresh process."""
    args = micro_args(results, cache, train=STEPS, extra=extra)
    if report is not None:
        args = [a for a in args if a != "--no-report"] + ["--report-dir", str(report)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1"}
    env.pop("CLBENCH_FAULT", None)
    if fault:
        env["CLBENCH_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "clbench.cli", *args], env=env, capture_output=True, text=True,
                          timeout=600, check=False)


def report(results: Path, out: Path) -> None:
    """``clbench report <results> -o <out> --no-figures``, in this process."""
    from clbench.reporting.build import build_report

    build_report([results], out, figures=False)


def run_dir(results: Path) -> Path:
    return results / "default" / "micro" / "sft" / "seed_0"


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name.endswith(".tmp") or p.name == "LOCK")


@pytest.fixture(scope="module")
def reference(micro_cache, micro_base_dir, tmp_path_factory):
    """An uninterrupted run (in this process) and its report."""
    from clbench.run.grid import run_grid

    root = tmp_path_factory.mktemp("reference")
    cfg = micro_config(root, cache_dir=micro_cache, train=STEPS)  # what micro_args says on a command line
    ((path, status),) = run_grid(cfg, progress=False, echo=lambda *a: None)
    assert status == "done" and path == run_dir(root / "results")
    report(root / "results", root / "report")
    return root


def test_killed_at_every_point_resumes_to_the_uninterrupted_bytes(reference, micro_cache, tmp_path):
    results, out = tmp_path / "results", tmp_path / "report"
    run = run_dir(results)

    # 1. killed while writing task 1's strategy state: its temporary file is left, no row
    killed = clbench(results, micro_cache, fault="write:strategy_state.pt")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    ckpt = run / "checkpoints" / "task_1"
    assert [p.name.startswith(".strategy_state.pt.") for p in ckpt.iterdir() if p.suffix == ".tmp"] == [True]
    assert not (ckpt / "strategy_state.pt").exists() and not (run / "eval" / "after_1.json").exists()
    assert (run / "LOCK").exists()  # left by the killed process, free to take

    # 2. killed after task 2's checkpoint, before its row: the leftover of kill 1 is gone
    killed = clbench(results, micro_cache, fault="after_checkpoint:2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (run / "eval" / "after_1.json").exists() and not (run / "eval" / "after_2.json").exists()
    assert (run / "checkpoints" / "task_2" / "strategy_state.pt").exists()
    assert [p for p in leftovers(run) if p != "LOCK"] == []

    # 3. killed while writing task 2's row: the temporary row is there, the row is not
    killed = clbench(results, micro_cache, fault="write:after_2.json")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert [p.name.startswith(".after_2.json.") for p in (run / "eval").iterdir() if p.suffix == ".tmp"] == [True]
    assert not (run / "eval" / "after_2.json").exists()

    # 4. the run finishes, then the report is killed while writing a table
    killed = clbench(results, micro_cache, report=out, fault="write:summary.md")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (run / "DONE").exists() and not (out / "README.md").exists()
    assert any(p.suffix == ".tmp" for p in out.rglob(".summary.md.*"))

    # 5. the report again, uninterrupted
    report(results, out)

    assert leftovers(results) == [] and leftovers(out) == []
    assert run_contents(run) == run_contents(run_dir(reference / "results"))
    for rel in ("micro/tables/summary.md", "micro/tables/per_task.md", "micro/tables/summary.tex"):
        assert (out / rel).read_bytes() == (reference / "report" / rel).read_bytes(), rel


def test_two_runs_at_once_on_one_directory(reference, micro_cache, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("CLBENCH_FAULT", None)
    args = [sys.executable, "-m", "clbench.cli", *micro_args(tmp_path / "results", micro_cache, train=STEPS)]
    procs = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    run = run_dir(tmp_path / "results")
    statuses = sorted(next(line.split(":")[0].strip() for line in out.splitlines() if str(run) in line
                           and line.startswith("    ")) for out, _ in outs)
    assert statuses in (["done", "locked"], ["done", "skipped"])  # never both trained it
    if statuses == ["done", "locked"]:
        err = next(e for o, e in outs if f"locked: {run}" in o)
        assert f"clbench: skipped {run}: process " in err and "is writing it (clbench run --wait waits for it)" in err
    assert leftovers(tmp_path / "results") == []
    assert run_contents(run) == run_contents(run_dir(reference / "results"))


class Killed(BaseException):
    """Stands for the process dying where it is raised (no ``except Exception`` handler stops it)."""


def test_a_run_that_dies_between_a_tasks_predictions_and_its_row_reruns_the_task(reference, micro_cache, tmp_path,
                                                                                monkeypatch):
    """A task's row file (``eval/after_<t>.json``, the resume point) is written after all of its per-item
    prediction files: dying while the predictions are written leaves no row, so the resumed run scores the
    task again and ends as an uninterrupted run — never a finished-looking task whose predictions (the
    bootstrap's input) are missing."""
    from clbench.run.grid import run_grid

    cfg = micro_config(tmp_path, cache_dir=micro_cache, train=STEPS)
    run = run_dir(tmp_path / "results")
    real_replace = os.replace
    written = []

    def dies_on_the_second(src, dst):
        if "predictions/after_1/" in str(dst):
            written.append(dst)
            if len(written) == 2:
                raise Killed()
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", dies_on_the_second)
    with pytest.raises(Killed):
        run_grid(cfg, progress=False, echo=lambda *a: None)
    monkeypatch.undo()
    predicted = sorted(p.name for p in (run / "predictions" / "after_1").iterdir())
    assert len(predicted) == 1  # one prediction file of task 1 written, the others not ...
    assert not (run / "eval" / "after_1.json").exists()  # ... and so no row: the task is not finished
    ((path, status),) = run_grid(cfg, progress=False, echo=lambda *a: None)
    assert (path, status) == (run, "resumed")
    assert leftovers(run) == []
    assert run_contents(run) == run_contents(run_dir(reference / "results"))


def test_a_lock_file_removed_by_its_releasing_holder_is_not_taken(tmp_path, monkeypatch):
    """The race of ``release`` (unlink, then close) with a process taking the lock: it opened the old file,
    the holder unlinked it and let go, and its flock then succeeds — on a file no longer at the path. It
    must not count that as the lock (a third process would create a new file and take it too): it retries
    on the path's current file, so exactly one holds the lock that is at the path."""
    from clbench.results import lock

    path = tmp_path / lock.LOCK_NAME
    first = lock.try_lock(path)
    assert first is not None
    real_flock = fcntl.flock
    calls = []

    def holder_releases_in_between(fd, op):
        calls.append(fd)
        if len(calls) == 1:  # the contender has opened the old file; now the holder lets go
            lock.release(path, first)
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", holder_releases_in_between)
    second = lock.try_lock(path)
    monkeypatch.undo()
    assert second is not None and len(calls) == 2  # the first flock was on the unlinked file: retried
    assert path.exists() and os.fstat(second).st_ino == os.stat(path).st_ino
    assert json.loads(path.read_text())["pid"] == os.getpid()
    assert lock.try_lock(path) is None  # a third process finds the lock held
    lock.release(path, second)


# --- in-process: the lock, and writes that fail halfway ------------------------------------------


def test_a_locked_run_is_skipped_and_left_as_it_is(micro_cfg):
    from clbench.results.lock import hold
    from clbench.run.grid import run_grid

    root = run_dir(Path(micro_cfg.results_dir))
    with hold(root) as held:
        assert held
        before = tree(root)
        ((path, status),) = run_grid(micro_cfg, progress=False, echo=lambda *a: None)
        assert (path, status) == (root, "locked") and tree(root) == before
        info = json.loads((root / "LOCK").read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
    assert not root.exists()  # the folders hold() created are gone with the lock


def test_wait_takes_the_lock_once_its_holder_lets_go(tmp_path):
    from clbench.results.lock import LOCK_NAME, release, try_lock
    from clbench.results.lock import hold as hold_lock

    fd = try_lock(tmp_path / LOCK_NAME)
    assert fd is not None and try_lock(tmp_path / LOCK_NAME) is None
    seen = []

    def holder_finishes(info):
        seen.append(info["pid"])
        release(tmp_path / LOCK_NAME, fd)

    with hold_lock(tmp_path, wait=True, poll=0.01, on_wait=holder_finishes) as held:
        assert held and seen == [os.getpid()]
    assert not (tmp_path / LOCK_NAME).exists()


def test_without_flock_a_lock_of_a_dead_process_on_this_host_is_stale(tmp_path, monkeypatch):
    from clbench.results import lock

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    path = tmp_path / "LOCK"
    gone = subprocess.Popen(["true"])  # a process id that no longer exists
    gone.wait()
    for record, taken in [({"pid": gone.pid, "host": socket.gethostname()}, True),
                          ({"pid": os.getpid(), "host": socket.gethostname()}, False),
                          ({"pid": gone.pid, "host": "another-host"}, False)]:
        path.write_text(json.dumps(record))
        fd = lock.try_lock(path)
        assert (fd is not None) is taken, record
        if fd is not None:
            assert json.loads(path.read_text())["pid"] == os.getpid()
            lock.release(path, fd)


@pytest.mark.parametrize("fails", ["fsync", "replace"])
def test_a_write_that_fails_halfway_keeps_the_old_file(fails, tmp_path, monkeypatch):
    from clbench.results.atomic import atomic_write_json

    target = tmp_path / "after_1.json"
    atomic_write_json(target, {"old": True})
    old = target.read_bytes()

    def broken(*args, **kwargs):
        raise OSError(errno.EIO, f"{fails} failed")

    monkeypatch.setattr(os, fails, broken)
    with pytest.raises(OSError, match=f"{fails} failed"):
        atomic_write_json(target, {"new": True})
    monkeypatch.undo()
    assert target.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["after_1.json"]  # no partial file beside it


def test_a_corrupt_row_on_resume_names_its_file(micro_cfg):
    from clbench.run.grid import run_grid

    ((root, _),) = run_grid(micro_cfg, progress=False, echo=lambda *a: None)
    (root / "DONE").unlink()
    (root / "eval" / "base.json").write_text("{")
    with pytest.raises(ConfigError, match=r"eval/base\.json:1: corrupt JSON"):
        run_grid(micro_cfg, progress=False, echo=lambda *a: None)
