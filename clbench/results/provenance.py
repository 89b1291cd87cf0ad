"""Versions and git revision recorded with every result (what produced this number?)."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGES = ["clbench", "torch", "transformers", "peft", "tokenizers", "datasets", "lm-eval", "avalanche-lib",
            "mlx", "mlx-lm", "numpy"]


def _version(pkg: str) -> str | None:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


def git_revision(where: Path | None = None) -> dict:
    """``{"commit", "dirty"}`` of the clbench checkout (``None`` outside a git work tree)."""
    where = where or Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                                check=False, timeout=10).stdout.strip() or None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                                capture_output=True, text=True, check=False, timeout=10).stdout
        return {"commit": commit, "dirty": bool(status.strip()) if commit else None}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def provenance() -> dict:
    import torch

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {p: _version(p) for p in PACKAGES},
        "git": git_revision(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
