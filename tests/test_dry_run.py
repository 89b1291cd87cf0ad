"""Issue 25 item 6: ``clbench run --dry-run`` resolves the grid as ``run`` does and says what it would do
(rows, lr, runs to do / resume / skip, an estimate from stored task times) with nothing built, loaded or
written; a bare ``clbench run`` starts nothing."""

from __future__ import annotations

import json

import pytest

from clbench.cli import _config, build_parser
from clbench.results.files import RunFiles
from tests.cli_helpers import cli, tree
from tests.conftest import MICRO_MODEL, MICRO_TRAIN
from tests.test_bad_names import refused_leaving_nothing


@pytest.fixture(autouse=True)
def nothing_is_built(monkeypatch):
    """A dry run that reached the base model's build, or a grid, fails here instead of training."""
    def refuse(*_, **__):
        raise AssertionError("a dry run built a model or started a grid")

    import clbench.modeling.tiny
    import clbench.run.grid

    monkeypatch.setattr(clbench.modeling.tiny, "build_base_model", refuse)
    monkeypatch.setattr(clbench.run.grid, "base_model_dir", refuse)
    monkeypatch.setattr(clbench.run.grid, "run_grid", refuse)


def dry_args(tmp_path, *extra: str) -> list[str]:
    """``clbench run --dry-run`` of sft and replay, seeds 0 and 1, on the micro stream and model."""
    args = ["run", "--dry-run", "--stream", "micro", "--strategies", "sft,replay", "--seeds", "0,1", "--name", "dry",
            "--results", str(tmp_path / "results"), "--set", f"cache_dir={tmp_path / 'cache'}", *extra]
    for section, values in (("model", MICRO_MODEL), ("train", MICRO_TRAIN)):
        args += [a for k, v in values.items() for a in ("--set", f"{section}.{k}={v}")]
    return args


def rows_written(files: RunFiles, seconds: list[tuple[float, float]]) -> None:
    """Fake stored rows: ``(train_seconds, seconds)`` per task, the first task pretrained (as in micro)."""
    files.root.joinpath("eval").mkdir(parents=True, exist_ok=True)
    for t, (train, evaluation) in enumerate(seconds):
        files.after(t).write_text(json.dumps({"scores": {}, "pretrained": t == 0, "train_seconds": train,
                                              "seconds": evaluation}))


def test_a_fresh_folder_has_every_run_to_do_and_nothing_is_created(tmp_path, capsys):
    rc, out, err = cli(dry_args(tmp_path), capsys)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("clbench: dry run of experiment 'dry' on stream 'micro': 2 rows x 1 order x 2 seeds; "
                               f"base model: embedded model {tmp_path / 'cache' / 'base_models'}/micro-")
    assert lines[0].endswith(f"(to build: {MICRO_MODEL['pretrain_steps']} pretraining steps)")
    assert lines[1:] == [
        f"  sft: strategy sft, lr {MICRO_TRAIN['lr']:g}; 2 to do, 0 to resume, 0 to skip; no stored timings",
        f"  replay: strategy replay, lr {MICRO_TRAIN['lr']:g}; 2 to do, 0 to resume, 0 to skip; no stored timings",
        "clbench: 4 runs to do, 0 to resume, 0 to skip; no stored timings",
        "clbench: dry run: nothing was built, loaded or written (clbench run without --dry-run runs it)"]
    assert tree(tmp_path) == {} and not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()


def test_done_and_config_only_runs_are_skipped_and_resumed_and_timed_from_stored_rows(tmp_path, capsys):
    cfg = _config(build_parser().parse_args(dry_args(tmp_path)))
    done = RunFiles.of(cfg, "micro", "sft", 0)
    rows_written(done, [(0.0, 5.0), (10.0, 2.0), (20.0, 4.0)])  # 0 + 12 + 24 = 36 s (the pretrained row's 5 s
    done.done.write_text("")                                      # evaluation is the base row's, not the task's)
    other = RunFiles.of(cfg, "micro", "old-label", 0)  # a finished run of a row no longer in the grid
    rows_written(other, [(0.0, 9.0), (3.0, 1.0), (5.0, 1.0)])  # 0 + 4 + 6 = 10 s
    other.done.write_text("")
    resumed = RunFiles.of(cfg, "micro", "sft", 1)
    rows_written(resumed, [(0.0, 5.0), (99.0, 99.0)])  # tasks 0 and 1 written: task 2 is left
    resumed.config.write_text("{}")
    before = tree(tmp_path)

    rc, out, err = cli(dry_args(tmp_path), capsys)
    assert rc == 0, err
    # sft: the resumed run has task 2 left, 24 s in its label's one finished run; replay: two runs to do, each
    # the mean over the experiment's finished runs, (36 + 10) / 2 = 23 s; in all 24 + 46 = 70 s
    assert out.splitlines()[1:4] == [
        (f"  sft: strategy sft, lr {MICRO_TRAIN['lr']:g}; 0 to do, 1 to resume, 1 to skip; about 24 s (mean of 1 "
         "finished sft run)"),
        (f"  replay: strategy replay, lr {MICRO_TRAIN['lr']:g}; 2 to do, 0 to resume, 0 to skip; about 46 s (mean of "
         "2 finished runs of the experiment)"),
        ("clbench: 2 runs to do, 1 to resume, 1 to skip; about 70 s of run time; building the base model and tuning "
         "not included")]
    assert tree(tmp_path) == before


def test_a_swept_row_lists_its_candidates_without_running_them(tmp_path, capsys):
    args = [a for a in dry_args(tmp_path) if a not in ("--strategies", "sft,replay")]
    rc, out, err = cli([*args, "--set", "strategies=[sft, {name: ewc, sweep: {lr: [0.001, 0.002]}}]"], capsys)
    assert rc == 0, err
    assert out.splitlines()[2] == ("  ewc: strategy ewc, lr tuned from 0.001, 0.002; 2 to do, 0 to resume, 0 to skip; "
                                   "tuning: 2 candidates (2 to do, 0 to resume, 0 done); no stored timings")
    assert out.splitlines()[3].startswith("clbench: 4 runs to do, 0 to resume, 0 to skip; tuning first: 2 of 2 "
                                          "candidate runs to do or resume")
    assert tree(tmp_path) == {}


def test_a_bare_run_starts_nothing_and_says_what_to_type(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = refused_leaving_nothing(capsys, ["run"], tmp_path)
    assert err == ("no experiment given to `clbench run`; run the benchmark with `clbench run configs/bench.yaml`, "
                   "try a strategy in a minute with `clbench run --smoke`, or see what a config runs with "
                   "`clbench run --dry-run CONFIG`")
    for flags in (["--quiet"], ["--no-report", "--wait"]):  # flags that choose no experiment choose none
        assert refused_leaving_nothing(capsys, ["run", *flags], tmp_path) == err
