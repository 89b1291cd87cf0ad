"""What a results folder holds: finished runs, unfinished runs, and runs that cannot be read.

A report must survive one broken run: a corrupt ``metrics.json``, a stray ``DONE`` beside no
``config.json``, a run killed halfway. :func:`take_inventory` reads every run folder under the given
paths — a folder with ``DONE`` or ``config.json`` — and sorts it into

* ``runs``: finished and readable (``clbench.results.aggregate.Run``);
* ``unreadable``: ``(folder, reason)``, the reason naming the file (and line) that failed;
* ``unfinished``: no ``DONE`` yet, with how many tasks have their row and the last of them.

The report is built from ``runs`` and lists the other two (``clbench report --strict`` refuses them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from clbench.errors import ClbenchError
from clbench.results.files import RunFiles, read_json


@dataclass(frozen=True)
class Unfinished:
    path: Path
    finished: int  # tasks with a row
    tasks: tuple[str, ...]

    def __str__(self) -> str:
        last = f"last finished task {self.tasks[self.finished - 1]!r}" if self.finished else "no task finished"
        return f"unfinished: {self.path}: {last} ({self.finished} of {len(self.tasks)})"


@dataclass(frozen=True)
class Inventory:
    runs: list = field(default_factory=list)  # clbench.results.aggregate.Run
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    unfinished: list[Unfinished] = field(default_factory=list)

    @property
    def left_out(self) -> list[str]:
        """One line per run the report leaves out: ``unreadable: <path>: <reason>`` or ``unfinished: ...``."""
        return [f"unreadable: {p}: {why}" for p, why in self.unreadable] + [str(u) for u in self.unfinished]


def _is_run(folder: Path) -> bool:
    """A finished run (``DONE``), or a run folder (``seed_<k>``, the name ``RunFiles.of`` gives) with a
    ``config.json`` — not any folder with a ``config.json`` (a Hugging Face checkpoint has one too)."""
    return (folder / "DONE").is_file() or (folder.name.startswith("seed_") and (folder / "config.json").is_file())


def path_list(paths) -> list[Path]:
    """``paths`` as a list: one path (a string or ``Path``) or several (a string is never taken as the
    characters it is made of, which would read every folder under ``/``)."""
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    return [Path(p) for p in paths]


def run_folders(paths) -> list[Path]:
    """Every run folder under ``paths`` (one path or a list of them), sorted."""
    found = set()
    for p in path_list(paths):
        candidates = [p, *(m.parent for marker in ("DONE", "config.json") for m in p.rglob(marker))]
        found.update(c for c in candidates if _is_run(c))
    return sorted(found)


def require(obj, keys: tuple[str, ...], name: str) -> None:
    """``ValueError`` naming file ``name`` unless ``obj`` is a mapping holding ``keys`` (dotted: nested)."""
    for key in keys:
        cur = obj
        for part in key.split("."):
            if not isinstance(cur, dict) or part not in cur:
                raise ValueError(f"{name}: no {key!r}")
            cur = cur[part]


def _why(exc: Exception, root: Path) -> str:
    if isinstance(exc, FileNotFoundError):
        missing = Path(exc.filename) if exc.filename else None
        return f"missing {missing.relative_to(root) if missing and root in missing.parents else missing}"
    text = str(exc) if isinstance(exc, (ClbenchError, ValueError)) else f"{type(exc).__name__}: {exc}"
    return text.replace(f"{root}/", "")


def _unfinished(path: Path) -> Unfinished:
    config = read_json(RunFiles(path).config)
    require(config, ("stream.tasks",), "config.json")
    tasks = tuple(config["stream"]["tasks"])
    return Unfinished(path, RunFiles(path).finished_tasks(len(tasks)), tasks)


def take_inventory(paths, read_run: Callable[[Path], object]) -> Inventory:
    """Sort the run folders under ``paths``; ``read_run(path)`` reads a finished one (raising on a bad file)."""
    inv = Inventory()
    for path in run_folders(paths):
        try:
            if (path / "DONE").exists():
                inv.runs.append(read_run(path))
            else:
                inv.unfinished.append(_unfinished(path))
        except (ClbenchError, OSError, ValueError, KeyError, TypeError, IndexError, json.JSONDecodeError) as exc:
            inv.unreadable.append((path, _why(exc, path)))
    return inv
