"""User-facing errors: each names where the bad input is and what would have been accepted."""

from __future__ import annotations

import difflib
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
