"""What the runner checks about the user's files and machine: before a grid starts, that its outputs can
be written and its logging works; while it runs, readable checkpoints and records cut to
``model.max_length``.

All are about the user's files rather than clbench's code, so all end as ``ClbenchError`` (a bad
checkpoint, a folder that cannot be written, W&B without a login) or a counted warning (a long record),
never as a traceback.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from clbench.errors import ConfigError


def _reason(exc: BaseException) -> str:
    """The cause of a failed load in one line — without torch's advice to load with
    ``weights_only=False``, which would run whatever code the file holds."""
    text = str(exc).split("WeightsUnpickler error:", 1)[-1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    advice = ("weights_only", "weights only", "torch.load")
    cause = next((ln for ln in lines if not any(a in ln.lower() for a in advice)), "")
    return f"{type(exc).__name__}: {cause}" if cause else type(exc).__name__


@contextlib.contextmanager
def readable_checkpoint(folder: Path, t: int) -> Iterator[None]:
    """Turn any failure to read task ``t``'s checkpoint in ``folder`` into a ``ConfigError`` naming it."""
    try:
        yield
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch, safetensors and pickle raise many types for a bad file
        raise ConfigError(str(folder), f"cannot resume from this checkpoint ({_reason(exc)}). clbench loads "
                          "checkpoints as tensors and plain data only (torch.load with weights_only=True) and "
                          f"never runs code from them; delete {folder.name} and eval/after_{t}.json (and "
                          "later rows) to retrain from the task before") from None


class TruncationCount:
    """Counts the distinct training records of each task that ``encode`` cut to ``max_length``."""

    def __init__(self, encode, max_length: int):
        self._encode, self.max_length, self._cut = encode, max_length, {}

    def encoder(self, task: int):
        """``encode`` for task ``task``'s view, counting what it cuts."""
        def encode(rec):
            enc = self._encode(rec)
            if enc.truncated:
                self._cut.setdefault(task, set()).add(id(rec))
            return enc
        return encode

    def count(self, task: int, name: str, warn: bool = True) -> int:
        """How many records of task ``task`` were cut; warns on stderr when some were."""
        n = len(self._cut.get(task, ()))
        if n and warn:
            print(f"clbench: warning: {n} training record(s) of task {name!r} are longer than "
                  f"model.max_length={self.max_length} tokens and were cut to it", file=sys.stderr)
        return n


def check_logging(log_cfg) -> None:
    """Weights & Biases, when asked for, is installed and — online — logged in: checked before the first run
    writes anything (``wandb.login(prompt=False, verify=False)`` reads the stored key, asks nobody and sends
    nothing)."""
    if not log_cfg.wandb:
        return
    try:
        import wandb
    except ImportError:
        raise ConfigError("log.wandb", "Weights & Biases logging needs `pip install wandb` (or set "
                          "log.wandb: false)") from None
    if log_cfg.wandb_mode == "online" and not wandb.login(prompt=False, verify=False):
        raise ConfigError("log.wandb_mode", "online W&B logging needs a login and none is stored: run `wandb login` "
                          "(or set WANDB_API_KEY), or log offline with log.wandb_mode: offline", ["offline", "online"])


def check_outputs(cfg) -> None:
    """The results folder and the cache are folders this user can write (or create): a results path that is
    a file, a read-only disk or another user's folder fails here, before anything is built or written."""
    from clbench.paths import writable_folder

    writable_folder(cfg.results_dir, "results_dir")
    writable_folder(cfg.resolved_cache_dir(), "cache_dir")
