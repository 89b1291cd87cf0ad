"""Checksums of what clbench writes and reads back later: checkpoints, cached rows, cached base models.

A file clbench wrote earlier is trusted on the next run — a resumed run loads its checkpoint, every run
of a grid copies the cached base row, every grid starts from the cached base model. A file changed
since (edited by hand, damaged by a disk, truncated by a full one, replaced) would be used silently.
So each carries a SHA-256 written with it, verified before it is used:

* a checkpoint folder ``checkpoints/task_<t>/`` holds ``checksums.json`` (the adapter and the strategy
  state), written after both: a mismatch refuses the resume, naming the file;
* a cached row or known subset (``<cache>/rows/*.json``) holds ``sha256`` of its
  content: a mismatch is refused, naming the file (delete it and clbench recomputes it); a cached row
  without one (written before checksums) is recomputed;
* a cached base model's ``build.json`` lists ``files_sha256`` of every file of the folder: a missing,
  truncated or changed file makes clbench say so and rebuild the model (a model built before checksums
  is used as it is).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from clbench.errors import ConfigError

CHECKSUMS = "checksums.json"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path | list[Path], chunk: int = 1 << 22) -> str:
    """SHA-256 of a file, or of several files concatenated in order (a split GGUF file)."""
    h = hashlib.sha256()
    for part in [path] if isinstance(path, (str, Path)) else path:
        with open(part, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()


def folder_sums(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """``{relative path: sha256}`` of every regular file under ``folder`` but ``skip`` and hidden files."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".") and p.relative_to(folder).as_posix() not in skip}


def changed_files(folder: Path, expected: dict[str, str]) -> list[str]:
    """The files of ``expected`` that are missing under ``folder`` or whose content changed."""
    out = []
    for rel, digest in sorted(expected.items()):
        path = Path(folder) / rel
        if not path.is_file() or sha256_file(path) != digest:
            out.append(rel)
    return out


def verify_checksums(folder: Path) -> None:
    """Refuse (``ConfigError`` naming the file) a file of ``folder`` that no longer matches its
    ``checksums.json``; a folder without one (written before checksums) is not checked."""
    sums_path = Path(folder) / CHECKSUMS
    if not sums_path.exists():
        return
    from clbench.results.atomic import read_json

    expected = read_json(sums_path)
    for rel in changed_files(folder, expected):
        raise ConfigError(str(Path(folder) / rel), "changed since clbench wrote it (missing, or its SHA-256 differs "
                          f"from {CHECKSUMS}); clbench will not resume from a checkpoint it cannot vouch for — "
                          "delete the task's checkpoint folder and its row eval/after_<t>.json (and later rows) to "
                          "retrain from the task before")


def content_digest(obj) -> str:
    """SHA-256 of ``obj`` as canonical JSON (sorted keys, no spaces): what a sealed file's ``sha256`` holds."""
    return sha256_bytes(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode())


def seal(obj: dict) -> dict:
    """``obj`` with ``sha256`` of its content, for a cache file."""
    return {**obj, "sha256": content_digest(obj)}


def unseal(data: dict, path: Path) -> dict | None:
    """The content of a sealed cache file ``path`` (``data``: its parsed JSON), ``None`` if it carries no
    checksum (a cache file written before checksums: recompute it); a mismatch is a ``ConfigError``."""
    if not isinstance(data, dict) or "sha256" not in data:
        return None
    content = {k: v for k, v in data.items() if k != "sha256"}
    if content_digest(content) != data["sha256"]:
        raise ConfigError(str(path), "this cache file changed since clbench wrote it (its SHA-256 differs from the "
                          "one stored in it); delete it and clbench computes it again")
    return content


def intact_build(target: Path, quiet: bool = False) -> bool:
    """Whether ``target`` holds a finished model build (``build.json``) whose files are still those it was built
    with (its ``files_sha256``; a build recorded without them counts as intact). A damaged one is reported on
    stderr (unless ``quiet``): the caller rebuilds it."""
    import sys

    from clbench.results.atomic import read_json

    if not (Path(target) / "build.json").exists():
        return False
    try:
        expected = read_json(Path(target) / "build.json").get("files_sha256")
    except (ConfigError, AttributeError):
        changed = ["build.json"]
    else:
        changed = changed_files(target, expected) if isinstance(expected, dict) else []
    if changed and not quiet:
        print(f"clbench: the cached model {target} is damaged ({', '.join(changed)}: missing or changed since it was "
              "built); building it again", file=sys.stderr)
    return not changed
