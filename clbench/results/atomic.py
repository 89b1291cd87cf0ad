"""Atomic result files: a reader sees the old file or the new one, never a part of one.

Each write goes to a temporary file ``.<name>.clbench-<8 hex digits>.tmp`` in the target's folder, is
flushed to disk (``fsync``), renamed over the target (``os.replace``, atomic on POSIX), and the folder
is fsynced so the rename itself survives a crash. A write that fails removes its temporary file; one
killed outright leaves it behind, and :func:`remove_leftovers` (called when a run resumes, under the
run's lock, and when a report is rebuilt) deletes it — only files of exactly that form
(:func:`is_leftover`), never everything that ends in ``.tmp``: a report folder or a results folder may
hold the user's own files.

The temporary file is created with mode ``0o666`` minus the user's umask — the mode ``open`` gives
any new file — so results are as readable to the group as the user's umask allows (``mkstemp``'s
``0o600`` made a shared results folder unreadable to colleagues).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from clbench.errors import ConfigError
from clbench.faults import fault_point

TMP_SUFFIX = ".tmp"
TMP_MARK = "clbench-"  # before the random part: what tells clbench's temporary files from anyone else's
LEFTOVER = re.compile(r"\..+\.clbench-[0-9a-f]{8}\.(tmp|safetensors)")  # (MLX's writer needs .safetensors)


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
    tmp = str(path.parent / f".{path.name}.{TMP_MARK}{secrets.token_hex(4)}{suffix}")
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


class _NotFinite(ValueError):
    pass


def _refuse_constant(name: str):
    raise _NotFinite(name)


def _constant_line(text: str, name: str) -> int:
    """The line of the first bare ``name`` (``NaN``, ``Infinity``, ``-Infinity``) outside a string in ``text``."""
    in_string = escaped = False
    for i, c in enumerate(text):
        if in_string:
            escaped, in_string = (False, True) if escaped else (c == "\\", c != '"')
        elif c == '"':
            in_string = True
        elif text.startswith(name, i):
            return text.count("\n", 0, i) + 1
    return 1


def loads_finite(text: str, where: str):
    """JSON ``text`` whose numbers are all finite; ``NaN``/``Infinity`` (which Python writes and the JSON
    standard does not have) is a ``ConfigError`` naming ``where`` and the line — stored results never hold one,
    and a report must not show it as a missing value."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except _NotFinite as exc:
        raise ConfigError(f"{where}:{_constant_line(text, str(exc))}", f"{exc} in stored results (not a number "
                          "clbench writes: the file was changed, or the run that wrote it went wrong)") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}:{exc.lineno}", f"corrupt JSON: {exc.msg}") from None


def read_json(path: Path):
    """The JSON in ``path``; a corrupt file, or one holding NaN or Infinity, is a ``ConfigError`` naming it
    (and the line)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), f"corrupt JSON: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    return loads_finite(text, str(path))


def read_jsonl(path: Path) -> list:
    """Every non-blank line of ``path`` as JSON, held to :func:`read_json`'s rules (``file:line`` in errors)."""
    out = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8", errors="strict").splitlines(), 1):
        if line.strip():
            try:
                out.append(loads_finite(line, str(path)))
            except ConfigError as exc:
                raise ConfigError(f"{path}:{n}", exc._parts[1]) from None
    return out


def is_leftover(path: Path) -> bool:
    """Whether ``path`` is a temporary file of :func:`atomic_path` (a regular file named as it names them)."""
    return bool(LEFTOVER.fullmatch(path.name)) and path.is_file() and not path.is_symlink()


def remove_leftovers(root: Path) -> list[Path]:
    """Delete the temporary files killed writes of clbench left under ``root`` (:func:`is_leftover`; nothing
    else, whatever its name); returns them."""
    gone = sorted(Path(folder) / name for folder, _, names in os.walk(root)  # (links to folders not followed)
                  for name in names if is_leftover(Path(folder) / name))
    for p in gone:
        p.unlink(missing_ok=True)
    return gone
