"""Every path clbench writes: built under a root it cannot leave, into a folder it can write.

Three roots hold everything clbench writes: the results folder (``results_dir``), the cache
(``cache_dir``: base models, cached rows, known subsets) and a report folder (``clbench report -o``).
:func:`inside` is how a path under one of them is made: each part must be one path component — not
empty, not ``.`` or ``..``, without ``/`` or NUL, at most 255 bytes — so the path cannot leave its root
whatever a name says. Names from a stream or a config are identifiers already (``clbench.config.names``);
names clbench derives (a tuning candidate ``sft~lr=0.001``, a task order ``medical>notes``) go through
:func:`component` first.

:func:`writable_folder` is the check made before anything is written: the root is a folder, or can be
made one, and this user may write there — so a results path that is a file, a read-only disk or a
folder of another user fails with one line before the first run starts, not halfway through it.
"""

from __future__ import annotations

import os
from pathlib import Path

from clbench.errors import ConfigError

NAME_MAX = 255  # bytes in one path component (ext4, APFS, NTFS, XFS)


def component(text: str) -> str:
    """``text`` as one safe path component: characters other than letters, digits and ``-_.+`` become
    ``_``, and a leading ``.`` (``.``, ``..``, a hidden file) gets a ``_`` before it. A valid name
    (``clbench.config.names``) is returned unchanged."""
    out = "".join(c if (c.isascii() and c.isalnum()) or c in "-_.+" else "_" for c in str(text))
    return "_" + out if not out or out.startswith(".") else out


def check_component(part: str, root: Path) -> str:
    """``part`` if it is one path component that stays under ``root``, else a ``ConfigError``."""
    problem = (None if isinstance(part, str) and part and part not in (".", "..") and "/" not in part
               and "\0" not in part and len(part.encode("utf-8", "surrogateescape")) <= NAME_MAX else "bad")
    if problem:
        raise ConfigError(str(root), f"{part!r} cannot be a file or folder name under this folder (one path "
                          f"component: not empty, not '.' or '..', no '/' or NUL, at most {NAME_MAX} bytes)")
    return part


def inside(root: str | Path, *parts: str) -> Path:
    """``root / part / ...``, each part checked by :func:`check_component`: the result lies under ``root``."""
    root = Path(root)
    path = root
    for part in parts:
        path = path / check_component(part, root)
    return path


def writable_folder(path: str | Path, what: str) -> Path:
    """``path`` if it is a folder this process may write in, or one it could create; else a ``ConfigError``
    for ``what`` (``results_dir``, ``report -o``) saying why. Nothing is created."""
    path = Path(path).expanduser()
    if "\0" in str(path):
        raise ConfigError(what, f"{str(path)!r} holds a NUL byte")
    probe = path
    while not probe.exists():
        if probe.is_symlink():
            raise ConfigError(what, f"{probe} is a link to nothing")
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(what, f"{probe} is a file, not a folder" if probe == path
                          else f"{path} cannot be made: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        verb = "write in" if probe == path else f"create {path} in"
        raise ConfigError(what, f"cannot {verb} {probe}: permission denied or a read-only file system")
    return path
