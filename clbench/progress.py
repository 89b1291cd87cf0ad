"""Progress bars (tqdm), switched off in worker processes and when output is not wanted."""

from __future__ import annotations

from collections.abc import Iterable

from tqdm.auto import tqdm


def bar(iterable: Iterable | None = None, *, desc: str, enabled: bool = True, total: int | None = None,
        leave: bool = True, unit: str = "it"):
    """A tqdm bar, or a silent one when ``enabled`` is false (tqdm's ``disable``)."""
    return tqdm(iterable, desc=desc, total=total, disable=not enabled, leave=leave, unit=unit,
                dynamic_ncols=True)
