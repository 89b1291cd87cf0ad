"""One writer per run directory: a lock file that a second ``clbench run`` finds held, and skips.

(The embedded base model's cache build takes the same lock, ``clbench.modeling.tiny``: it sits here, with
the atomic writes, below the models.)

:func:`hold` takes ``<dir>/LOCK`` for the block. The file records who holds it (process id, host,
start time in UTC), so the process that finds it held can say who. The lock itself is
``fcntl.flock`` on that file: the kernel drops it when the holder exits however it exits (``kill -9``
included), so a lock file left by a killed run is free by construction, and the next run takes it.
On a filesystem without ``flock`` (some network mounts answer ``ENOLCK``), the file is created with
``O_CREAT | O_EXCL`` instead and a lock left behind is recognised as stale by its record: same host
and a process id that no longer exists (a lock from another host is taken as held — only the user
can tell whether that run still lives; the message says which host and process to check).

Why not a library (``filelock``): it offers either flock or O_EXCL, not the holder's identity for the
message, and not stale detection for the O_EXCL case; the whole mechanism is the few lines below.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

LOCK_NAME = "LOCK"
NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def holder(path: Path, wait: float = 0.0) -> dict | None:
    """The record in lock file ``path`` (``pid``, ``host``, ``since``), ``None`` if absent or unreadable.

    ``wait``: seconds to keep re-reading an empty or half-written record — a holder writes it just after
    taking the lock, so a process that finds the lock taken may read it in between.
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            info = json.loads(Path(path).read_text())
            if isinstance(info, dict):
                return info
        except (OSError, ValueError):
            pass
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def describe(info: dict | None) -> str:
    if not info:
        return "another clbench process"
    return f"process {info.get('pid')} on host {info.get('host')} (since {info.get('since')})"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_stale(info: dict | None) -> bool:
    """Whether an O_EXCL lock with record ``info`` belongs to a process of this host that has exited."""
    return bool(info) and info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int) \
        and not _alive(info["pid"])


def _record() -> bytes:
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}).encode()


def _try_flock(path: Path) -> int | None:
    """An fd holding the flock on ``path``, ``None`` if another process holds it; ``OSError`` with an
    errno in :data:`NO_FLOCK` if the filesystem cannot flock."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError:
            os.close(fd)
            raise
        try:  # the previous holder may have removed the file between our open and our flock
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, _record())
            return fd
        os.close(fd)


def _try_exclusive(path: Path) -> int | None:
    """An fd of a lock file created with O_EXCL (after removing a stale one), ``None`` if held."""
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            if not is_stale(holder(path)):
                return None
            Path(path).unlink(missing_ok=True)
            continue
        os.write(fd, _record())
        return fd
    return None


def try_lock(path: Path) -> int | None:
    """Take lock file ``path`` now: an fd to pass to :func:`release`, or ``None`` if it is held."""
    try:
        return _try_flock(path)
    except OSError as exc:
        if exc.errno not in NO_FLOCK:
            raise
        return _try_exclusive(path)


def release(path: Path, fd: int) -> None:
    """Remove the lock file, then drop the lock (in this order: no one can take a file being removed)."""
    Path(path).unlink(missing_ok=True)
    os.close(fd)


@contextlib.contextmanager
def hold(folder: Path, wait: bool = False, poll: float = 1.0, on_wait=None) -> Iterator[bool]:
    """Hold ``folder``'s lock for the block; yields ``False`` (and holds nothing) if another process
    holds it and ``wait`` is off. With ``wait``, polls every ``poll`` seconds, calling ``on_wait(info)``
    once. Folders this call creates are removed again if the block leaves them empty."""
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = try_lock(path)
    told = False
    while fd is None and wait:
        if not told and on_wait is not None:
            on_wait(holder(path))
            told = True
        time.sleep(poll)
        fd = try_lock(path)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            release(path, fd)
        for p in created:  # innermost first
            with contextlib.suppress(OSError):
                p.rmdir()
