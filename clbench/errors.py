"""User-facing errors: each names where the bad input is and what would have been accepted."""

from __future__ import annotations

import difflib
import errno
from collections.abc import Iterable


class ClbenchError(Exception):
    """An error caused by the user's input; the CLI prints it without a traceback (exit code 2)."""


class DivergenceError(ClbenchError):
    """Training produced a non-finite loss: the run stops before the bad update is applied."""


class ConfigError(ClbenchError):
    """Bad configuration or data: ``where`` is a file (with ``:line`` when known) or a dotted field."""

    def __init__(self, where: str, message: str, allowed: Iterable[str] | None = None):
        self.where, self.allowed = where, sorted(allowed) if allowed is not None else None
        text = f"{where}: {message}"
        if self.allowed is not None:
            text += f" (allowed: {', '.join(self.allowed)})"
        super().__init__(text)
        self._parts = (where, message, allowed)

    def __reduce__(self):  # rebuilt from its parts, so it survives pickling (errors of parallel runs)
        return type(self), self._parts


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` — did you mean 'x'?`` when a close match exists, else an empty string."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" — did you mean {close[0]!r}?" if close else ""


# errno -> what it means for the user: the machine's state, not a bug in clbench (exit code 2, one line)
ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "no space left on the device; free some space and run again (finished tasks are kept)",
    errno.EDQUOT: "disk quota exceeded; free some space and run again (finished tasks are kept)",
    errno.EROFS: "read-only file system; choose a folder you can write (--results, cache_dir, -o)",
    errno.EACCES: "permission denied; choose a folder you can write (--results, cache_dir, -o)",
    errno.EPERM: "operation not permitted; choose a folder you can write (--results, cache_dir, -o)",
    errno.ENOTDIR: "a file stands where a folder is needed; move it or choose another path",
    errno.EEXIST: "a file stands where a folder is needed; move it or choose another path",
    errno.EISDIR: "a folder stands where a file is needed; move it or choose another path",
    errno.ENAMETOOLONG: "file name too long for this file system",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n) or run fewer jobs",
    errno.ENOMEM: "out of memory",
    errno.EIO: "input/output error from the device; check the disk",
}


def environment_error(exc: OSError) -> str | None:
    """A one-line cause for an ``OSError`` the environment caused (disk full, read-only, permissions, a file
    where a folder should be), naming the path; ``None`` for any other (a bug)."""
    cause = ENVIRONMENT_ERRNOS.get(exc.errno)
    if cause is None:
        return None
    path = exc.filename if exc.filename is not None else ""
    return f"{path}: {cause}" if path else cause
