"""Atomic result files: a reader sees the old file or the new one, never a part of one.

Each write goes to a temporary file ``.<name>.<random>.tmp`` in the target's folder, is flushed to
disk (``fsync``), renamed over the target (``os.replace``, atomic on POSIX), and the folder is
fsynced so the rename itself survives a crash. A write that fails removes its temporary file; one
killed outright leaves it behind, and :func:`remove_leftovers` (called when a run resumes, under the
run's lock) deletes it.

The temporary file is created with mode ``0o666`` minus the user's umask — the mode ``open`` gives
any new file — so results are as readable to the group as the user's umask allows (``mkstemp``'s
``0o600`` made a shared results folder unreadable to colleagues).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from clbench.errors import ConfigError
from clbench.faults import fault_point

TMP_SUFFIX = ".tmp"


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems cannot open or sync a folder; the rename stands
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextmanager
def atomic_path(path: Path, suffix: str = TMP_SUFFIX) -> Iterator[str]:
    """A temporary file name next to ``path`` for the block to write (with any writer, e.g. MLX's
    ``save_safetensors``); fsynced and renamed over ``path`` when the block succeeds, removed when it
    fails, so a reader never sees a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        fault_point(f"write:{path.name}")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_write_jsonl(path: Path, records) -> None:
    atomic_write_bytes(path, "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in records).encode())


def read_json(path: Path):
    """The JSON in ``path``; a corrupt file is a ``ConfigError`` naming it (and the line)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}", f"corrupt JSON: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), f"corrupt JSON: not UTF-8 ({exc.reason} at byte {exc.start})") from None


def remove_leftovers(root: Path) -> list[Path]:
    """Delete the temporary files killed writes left under ``root``; returns them."""
    gone = sorted(p for p in Path(root).rglob(f".*{TMP_SUFFIX}") if p.is_file())
    for p in gone:
        p.unlink(missing_ok=True)
    return gone
