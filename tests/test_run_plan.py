"""One run, one spec: each run locks and writes its own directory, the grid refuses a row before anything
is written, and results are reported from where they were written."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest

from clbench.errors import ConfigError
from clbench.results import atomic
from clbench.results.lock import LOCK_NAME
from clbench.run.grid import run_grid
from tests.conftest import MICRO_MODEL, MICRO_TRAIN, micro_config

QUIET = {"progress": False, "echo": lambda *a: None}


def _run_folder(path: Path) -> Path | None:
    """The ``seed_<k>`` folder a result file belongs to (None: a file outside any run)."""
    return next((p for p in Path(path).parents if p.name.startswith("seed_")), None)


def test_every_run_of_a_two_order_grid_writes_only_under_its_own_lock(micro_cache, micro_base_dir, tmp_path,
                                                                     monkeypatch):
    """The reversed run locks ``order-reversed/seed_0`` (not the given run's ``seed_0``) while it writes,
    and removes the temporary files a killed write left in its own folder."""
    cfg = micro_config(tmp_path, cache_dir=micro_cache, orders="[given, reversed]", seeds="[0]")
    label = tmp_path / "results" / "default" / "micro" / "sft"
    leftover = label / "order-reversed" / "seed_0" / ".config.json.clbench-deadbeef.tmp"  # a write killed earlier
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"partial")
    unlocked: list[str] = []
    real = atomic.atomic_path

    @contextlib.contextmanager
    def watched(path, *args, **kwargs):
        run = _run_folder(path)
        if run is not None:
            lock = run / LOCK_NAME
            held = lock.exists() and json.loads(lock.read_text() or "{}").get("pid") == os.getpid()
            if not held:
                unlocked.append(str(Path(path).relative_to(label)))
        with real(path, *args, **kwargs) as tmp:
            yield tmp

    monkeypatch.setattr(atomic, "atomic_path", watched)
    results = run_grid(cfg, **QUIET)
    assert [(p.relative_to(label).as_posix(), s) for p, s in results] == \
        [("seed_0", "done"), ("order-reversed/seed_0", "done")]
    assert unlocked == []  # every result file was written by the holder of its own run's lock
    assert not leftover.exists()
    assert not any(label.rglob(LOCK_NAME))  # both locks released


def test_a_row_check_plan_refuses_is_refused_for_the_grid_before_any_run_under_its_label(micro_cache, micro_base_dir,
                                                                                       tmp_path):
    """A cms row whose slowest chunk never completes stops the grid before the sft row before it writes
    anything, and the error names the row by its label."""
    cfg = micro_config(tmp_path, cache_dir=micro_cache,
                       strategies="[sft, {name: cms, label: cms-slow, options: {chunk_sizes: [1, 100000]}}]")
    with pytest.raises(ConfigError, match=r"strategies\[cms-slow\]\.options\.chunk_sizes\[1\]: .*never completes"):
        run_grid(cfg, **QUIET)
    assert not (tmp_path / "results").exists()


def test_a_swept_candidate_that_check_plan_refuses_is_refused_before_anything_is_written(micro_cache, micro_base_dir,
                                                                                       tmp_path):
    cfg = micro_config(tmp_path, cache_dir=micro_cache,
                       strategies="[{name: cms, label: cms-slow, sweep: {chunk_sizes: [[1, 2], [1, 100000]]}}]")
    with pytest.raises(ConfigError, match=r"strategies\[cms-slow~chunk_sizes=\[1, 100000\]\]\.options\.chunk_sizes"):
        run_grid(cfg, **QUIET)
    assert not (tmp_path / "results").exists()


def test_a_run_is_reported_from_where_it_was_written_and_a_name_with_a_space_is_refused(
        micro_cache, micro_base_dir, tmp_path, monkeypatch, capsys):
    """``clbench run`` reports from the folder the runs were written to (``experiment_dir``, the one place
    that makes it); a name that is not one path component as written (a space) is refused before anything
    is written, so no name can be reported from one folder and written to another."""
    from clbench.cli import main
    from clbench.reporting import build

    reported = []
    monkeypatch.setattr(build, "build_report", lambda roots, out, *a, **k: reported.extend(roots) or out / "README.md")
    sets = [f"--set=model.{k}={v}" for k, v in MICRO_MODEL.items()] + \
        [f"--set=train.{k}={v}" for k, v in MICRO_TRAIN.items()] + [f"--set=cache_dir={micro_cache}"]

    def run(name):
        return main(["run", "--stream", "micro", "--strategies", "sft", "--seeds", "0", "--name", name,
                     "--results", str(tmp_path / "results"), "--report-dir", str(tmp_path / "report"), "--quiet",
                     *sets])

    assert run("my exp") == 2
    assert not (tmp_path / "results").exists() and not reported
    assert "--name" in capsys.readouterr().err
    assert run("my-exp.v2") == 0
    (done,) = (tmp_path / "results").rglob("DONE")
    written = done.parents[3]  # <results>/<experiment>/micro/sft/seed_0/DONE
    assert written == tmp_path / "results" / "my-exp.v2"
    assert reported == [written]
    assert f"results in {written}" in capsys.readouterr().out


def test_errors_found_while_running_name_the_row(micro_model, tmp_path):
    """A plugin's option the model refuses (a block it does not have) names the row and the plugin's place."""
    from clbench.backends import get_backend
    from clbench.config.experiment import StrategySpec
    from clbench.run.plan import resolve_entry

    cfg = micro_config(tmp_path)
    row = StrategySpec("sft", label="sft-deep", with_=("activation_l2", {"name": "surprise", "options": {"layers": [7]}}))
    strategy = resolve_entry(row, cfg).make(0, cfg, get_backend("torch"))
    with pytest.raises(ConfigError, match=r"strategies\[sft-deep\]\.with\[1\]\.options\.layers: block 7 does not exist"):
        strategy.prepare_model(micro_model[0])


def test_only_what_will_run_is_checked_a_swept_row_by_its_candidates(tmp_path):
    """A row as written never runs when it is swept: its chunk of 16 steps (12 in the micro stream) is
    fine once every candidate trains 10 steps a task; a candidate of 6 steps is refused."""
    from clbench.run.plan import plan
    from clbench.run.sweep import plan_settings

    def settings(steps):
        cfg = micro_config(tmp_path, strategies="[{name: cms, label: cms-long, options: {chunk_sizes: [1, 16]}, "
                                                f"sweep: {{steps_per_task: {steps}}}}}]")
        stream, entries = plan(cfg)
        return plan_settings(cfg, entries, stream)

    _pinned, plans = settings("[10, 20]")
    assert [s for s, _ in plans["cms-long"][1]] == [{"train.steps_per_task": 10}, {"train.steps_per_task": 20}]
    with pytest.raises(ConfigError, match=r"strategies\[cms-long~steps_per_task=6\]\.options\.chunk_sizes\[1\]"):
        settings("[6, 10]")
