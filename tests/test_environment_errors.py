"""Issue 23, the machine: every environment failure is one line and exit code 2 — a full disk, a read-only
or foreign folder, a file where a folder should be, W&B without a login, a missing wandb, pickle weights —
checked before anything is written wherever it can be; a damaged cached base model is rebuilt."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import pytest

from tests.cli_helpers import cli, micro_args, tree
from tests.test_bad_names import refused_leaving_nothing


def test_a_results_path_that_is_a_file_is_refused_before_anything_is_written(tmp_path, capsys):
    (tmp_path / "results").write_text("notes")
    err = refused_leaving_nothing(capsys, micro_args(tmp_path / "results", tmp_path / "cache"), tmp_path)
    assert err == f"results_dir: {tmp_path / 'results'} is a file, not a folder"
    err = refused_leaving_nothing(capsys, micro_args(tmp_path / "results" / "deeper", tmp_path / "cache"), tmp_path)
    assert err == f"results_dir: {tmp_path / 'results' / 'deeper'} cannot be made: {tmp_path / 'results'} is a file, not a folder"


def test_a_folder_this_user_cannot_write_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    """(``os.access`` answers for a read-only mount, a folder of another user or one without write permission;
    the tests run as root, who may write anywhere, so it is made to say no for the results folder.)"""
    results = tmp_path / "results"
    results.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != results and real(p, mode, **kw))
    err = refused_leaving_nothing(capsys, micro_args(results, tmp_path / "cache"), tmp_path)
    assert err == f"results_dir: cannot write in {results}: permission denied or a read-only file system"


def test_a_nul_byte_in_a_path_is_refused(tmp_path, capsys):
    err = refused_leaving_nothing(capsys, micro_args(Path(f"{tmp_path}/res\0ults"), tmp_path / "cache"), tmp_path)
    assert err == f"--results: a NUL byte (\\0) at character {len(str(tmp_path)) + 5} of '{tmp_path}/res\\x00ults'"


@pytest.mark.parametrize(("code", "cause"), [
    (errno.ENOSPC, "no space left on the device; free some space and run again (finished tasks are kept)"),
    (errno.EROFS, "read-only file system; choose a folder you can write (--results, cache_dir, -o)"),
    (errno.EACCES, "permission denied; choose a folder you can write (--results, cache_dir, -o)"),
])
def test_a_write_the_machine_refuses_midway_is_one_line_and_exit_code_2(code, cause, micro_cache, micro_base_dir,
                                                                         tmp_path, capsys, monkeypatch):
    """The disk fills (or turns read-only) while task 1's row is written: one line naming the file, exit code 2,
    the rows written before it kept, no partial file."""
    from clbench.results import atomic

    real = atomic.atomic_write_bytes

    def failing(path, data):
        if Path(path).name == "after_1.json":
            raise OSError(code, os.strerror(code), str(path))
        return real(path, data)

    monkeypatch.setattr(atomic, "atomic_write_bytes", failing)
    results = tmp_path / "results"
    rc, _, err = cli(micro_args(results, micro_cache, train={"steps_per_task": 1}), capsys)
    run = next(results.rglob("seed_0"))
    assert rc == 2 and "Traceback" not in err, err
    assert err.endswith(f"clbench: error: {run / 'eval' / 'after_1.json'}: {cause}\n")
    assert (run / "eval" / "after_0.json").exists() and not (run / "eval" / "after_1.json").exists()
    assert not [p for p in results.rglob("*.tmp")]


def test_an_oserror_that_is_not_the_environment_is_still_a_bug(tmp_path, capsys, monkeypatch):
    def bug(*args, **kwargs):
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr("clbench.run.grid.run_grid", bug)
    rc, _, err = cli(micro_args(tmp_path / "results", tmp_path / "cache"), capsys)
    assert rc == 1 and err.startswith("clbench: internal error (a bug, please report it): OSError: [Errno 9]")


def test_a_report_output_that_is_a_file_is_refused(tmp_path, capsys):
    from tests.report_runs import make_run

    make_run(tmp_path / "results", "sft", 0, [[0.5, 0.1, 0.1], [0.5, 0.9, 0.1], [0.4, 0.7, 0.9]])
    (tmp_path / "out").write_text("my notes")
    err = refused_leaving_nothing(capsys, ["report", str(tmp_path / "results"), "-o", str(tmp_path / "out")], tmp_path)
    assert err == f"report -o: {tmp_path / 'out'} is a file, not a folder"
    (tmp_path / "rep").write_text("x")
    args = [a for a in micro_args(tmp_path / "results", tmp_path / "cache") if a != "--no-report"]
    err = refused_leaving_nothing(capsys, [*args, "--report-dir", str(tmp_path / "rep")], tmp_path)
    assert err == f"--report-dir: {tmp_path / 'rep'} is a file, not a folder"


def test_online_wandb_without_a_login_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc, no stored key
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home" / ".config" / "wandb"))
    args = micro_args(tmp_path / "results", tmp_path / "cache", extra=("--set", "log.wandb=true"))
    err = refused_leaving_nothing(capsys, args, tmp_path)
    assert err == ("log.wandb_mode: online W&B logging needs a login and none is stored: run `wandb login` (or set "
                   "WANDB_API_KEY), or log offline with log.wandb_mode: offline (allowed: offline, online)")


def test_a_missing_wandb_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    args = micro_args(tmp_path / "results", tmp_path / "cache",
                      extra=("--set", "log.wandb=true", "--set", "log.wandb_mode=offline"))
    err = refused_leaving_nothing(capsys, args, tmp_path)
    assert err == "log.wandb: Weights & Biases logging needs `pip install wandb` (or set log.wandb: false)"


def test_pickle_weights_in_model_path_are_refused_with_how_to_convert(micro_base_dir, tmp_path, capsys):
    import shutil

    import torch
    from safetensors.torch import load_file

    model = tmp_path / "model"
    shutil.copytree(micro_base_dir, model)
    torch.save(load_file(model / "model.safetensors"), model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()
    err = refused_leaving_nothing(capsys, micro_args(tmp_path / "results", tmp_path / "cache",
                                                     extra=("--set", f"model.path={model}")), tmp_path)
    assert err.startswith(f"model.path: {model} holds pickle weights (pytorch_model.bin); clbench loads safetensors "
                          "only: convert it with transformers, once, in an environment you trust: python -c ")
    assert err.endswith(f" {model} {model}-safetensors") and "weights_only=False" not in err


def test_a_truncated_cached_base_model_is_rebuilt(micro_stream, tmp_path, capsys):
    from clbench.modeling.tiny import build_base_model
    from tests.conftest import micro_config

    cfg = micro_config(tmp_path, model={"pretrain_steps": 2})
    target = build_base_model(cfg.model, micro_stream, tmp_path / "cache", progress=False)
    good = tree(target)
    weights = target / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a disk that filled up mid-copy
    capsys.readouterr()
    assert build_base_model(cfg.model, micro_stream, tmp_path / "cache", progress=False) == target
    assert f"clbench: the cached model {target} is damaged (model.safetensors: missing or changed since it was " \
           "built); building it again" in capsys.readouterr().err
    rebuilt = tree(target)
    assert rebuilt["model.safetensors"] == good["model.safetensors"]  # the same build, deterministic
    (target / "tokenizer.json").unlink()
    assert build_base_model(cfg.model, micro_stream, tmp_path / "cache", progress=False) == target
    assert (target / "tokenizer.json").exists() and "tokenizer.json: missing" in capsys.readouterr().err
