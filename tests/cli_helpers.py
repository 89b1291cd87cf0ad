"""Calling ``clbench.cli.main`` the way a user's shell does, on the micro stream and model of ``conftest``.

``micro_args`` gives the command-line equivalent of ``tests.conftest.micro_config`` (same overrides,
so a run started either way has the same ``config.json``); ``tree`` snapshots a folder's files and
their bytes, to assert that a refused command left a results directory exactly as it was.
"""

from __future__ import annotations

import hashlib
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
