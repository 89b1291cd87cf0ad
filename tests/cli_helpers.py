"""Calling ``clbench.cli.main`` the way a user's shell does, on the micro stream and model of ``conftest``.

``micro_args`` gives the command-line equivalent of ``tests.conftest.micro_config`` (same overrides,
so a run started either way has the same ``config.json``); ``tree`` snapshots a folder's files and
their bytes, to assert that a refused command left a results directory exactly as it was;
``run_contents`` is a run directory's files with wall times left out, to assert that two runs (resumed
and uninterrupted, Ray and local) wrote the same results.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tests.conftest import MICRO_MODEL, MICRO_TRAIN


def micro_args(results: Path, cache: Path, *, stream: str = "micro", train: dict | None = None,
               extra: tuple[str, ...] = ()) -> list[str]:
    """``clbench run`` arguments for one sft run (seed 0) on the micro model."""
    args = ["run", "--stream", stream, "--strategies", "sft", "--seeds", "0", "--jobs", "1",
            "--results", str(results), "--set", f"cache_dir={cache}", "--quiet", "--no-report"]
    for section, values in (("model", MICRO_MODEL), ("train", {**MICRO_TRAIN, **(train or {})})):
        for k, v in values.items():
            args += ["--set", f"{section}.{k}={v}"]
    return [*args, *extra]


def cli(args: list[str], capsys) -> tuple[int, str, str]:
    """``(exit code, stdout, stderr)`` of ``clbench <args>``, in this process."""
    from clbench.cli import main

    capsys.readouterr()
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def tree(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` (empty if it does not exist)."""
    root = Path(root)
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


WALL_TIMES = ("seconds", "train_seconds", "eval_seconds", "step_time")  # fields that differ run to run


def without_wall_times(obj):
    """``obj`` (parsed JSON) with every :data:`WALL_TIMES` field removed, at any depth."""
    if isinstance(obj, dict):
        return {k: without_wall_times(v) for k, v in obj.items() if k not in WALL_TIMES}
    if isinstance(obj, list):
        return [without_wall_times(v) for v in obj]
    return obj


def run_contents(run: Path, skip: tuple[str, ...] = ()) -> dict[str, object]:
    """Every file of a run directory: its bytes, or for the files holding wall times (``metrics.json``,
    ``eval/``, the train logs) their data without them. TensorBoard files are left out (drawn from the
    step log and rows compared here, with wall times inside and clock, host and pid in their names), and
    so are the relative paths in ``skip``."""
    out: dict[str, object] = {}
    for p in sorted(Path(run).rglob("*")):
        rel = p.relative_to(run).as_posix()
        if not p.is_file() or rel.startswith("tensorboard/") or rel in skip:
            continue
        if rel == "metrics.json" or rel.startswith("eval/"):
            out[rel] = without_wall_times(json.loads(p.read_text()))
        elif rel.endswith(".jsonl") and "train_log" in rel:
            out[rel] = [without_wall_times(json.loads(line)) for line in p.read_text().splitlines()]
        else:
            out[rel] = p.read_bytes()
    return out
