"""What the unmodified base model scores, computed once per model, stream and scoring rules and reused by
every run: the reference and base rows, and the known subset of the pretrained tasks.

None of these depends on the strategy or the seed: ``reference`` scores a randomly initialised model of
the base model's architecture (its seed is ``model.seed + 1``), ``base`` scores the base model as loaded,
before any strategy's ``prepare_model``, and the known subset is the items of the pretrained tasks that
the base model as loaded gets right (``known_subset: true`` in the stream file; how it is used:
``clbench.results.breakdown``). A grid of 13 strategies × 3 seeds used to evaluate both rows 39 times;
now the first run computes them and the others copy them, and every strategy and seed scores the same
known subset.

The cache lives in the clbench cache folder (``rows/<what>-<digest>.json``, written atomically, with a
checksum of its content that is verified when it is read: ``clbench.results.integrity``); one key
builder (:func:`cache_key`) hashes everything a cached entry depends on:

* the checkpoint: its resolved path and the name, size and modification time of every file in it
  (a rebuilt or replaced model recomputes, in the same folder too);
* the stream: its fingerprint (every probe item and training record) after any chat template;
* how rows are scored: backend, device type, dtype, the backend's resolved numerics (device, dtype,
  autocast: ``model.autocast: auto`` resolves per machine), ``eval.max_new_tokens``, the reference seed, and
  :data:`SCORING_VERSION` (bumped when a scoring rule of ``clbench.eval`` changes).

Two runs that start at once may both compute a missing entry; both write the same content atomically,
so the last write wins harmlessly. Every run still gets its own ``eval/reference.json`` and
``eval/base.json`` with the per-item predictions, copied from the cache, so the results format is
unchanged (the row names its cache file, ``"cache_file"``), and its own ``eval/known_subset.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from clbench.config.experiment import ExperimentConfig, config_dict
from clbench.data.probe_kinds import RIGHT_OR_WRONG_KINDS
from clbench.data.streams import Stream
from clbench.eval.rows import evaluate_row
from clbench.paths import inside
from clbench.results.breakdown import known_subset_path
from clbench.results.files import RunFiles, atomic_write_json, read_json
from clbench.results.integrity import seal, unseal

SCORING_VERSION = 2  # bump when a probe's scoring rule changes, so cached rows are recomputed (2: token trees)
KNOWN_SUBSET = "known_subset"  # the ``what`` of the known subset's cache entry


def checkpoint_fingerprint(path: Path) -> dict:
    """What identifies a checkpoint folder's contents without reading its weights."""
    path = Path(path).resolve()
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    return {"path": str(path),
            "files": [[str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]}


def cache_key(cfg: ExperimentConfig, stream: Stream, base_dir: Path, what: str, numerics: dict | None = None) -> dict:
    """Everything the cached ``what`` (``"reference"``, ``"base"`` or :data:`KNOWN_SUBSET`) depends on;
    ``numerics`` is the backend's (``Backend.numerics``)."""
    model = config_dict(cfg.model)
    return {"row": what, "scoring_version": SCORING_VERSION, "checkpoint": checkpoint_fingerprint(base_dir),
            "stream": {"name": stream.name, "fingerprint": stream.fingerprint()},
            "backend": model.get("backend", "torch"), "device": str(model.get("device")),
            "dtype": str(model.get("dtype")), "chat": bool(cfg.model.use_chat_template),
            "numerics": numerics or {}, "max_new_tokens": cfg.eval.max_new_tokens,
            "reference_seed": cfg.model.seed + 1 if what == "reference" else None}


def cache_path(cfg: ExperimentConfig, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return inside(cfg.resolved_cache_dir(), "rows", f"{key['row']}-{digest}.json")


def cached(cfg: ExperimentConfig, key: dict, field: str, compute: Callable[[], dict]) -> tuple[dict, Path]:
    """The entry stored under ``key`` (its ``field``) and its cache file, or ``compute()`` it and store it."""
    path = cache_path(cfg, key)
    if path.exists():
        stored = unseal(read_json(path), path)  # changed since written: refused; no checksum (older): recomputed
        if stored is not None and stored.get("key") == key:  # a hash collision recomputes
            return stored[field], path
    value = compute()
    atomic_write_json(path, seal({"key": key, field: value}))
    return value, path


def fixed_row(cfg: ExperimentConfig, stream: Stream, base_dir: Path, which: str, compute: Callable[[], dict],
              numerics: dict | None = None) -> dict:
    """The ``which`` row (``"reference"`` or ``"base"``) from the cache, or ``compute()`` it and cache it; the
    returned row says which cache file it is (``cache_file``)."""
    row, path = cached(cfg, cache_key(cfg, stream, base_dir, which, numerics), "row", compute)
    return {**row, "cache_file": path.name}


def pretrained_part(stream: Stream) -> Stream | None:
    """The stream reduced to its pretrained tasks' right-or-wrong suites; ``None`` when it has none or
    does not ask for a known subset (``known_subset: true`` in the stream file)."""
    if not stream.spec.known_subset:
        return None
    tasks = []
    for t in stream.pretrained_tasks:
        suites = tuple(s for s in t.probes if s.kind in RIGHT_OR_WRONG_KINDS)
        if suites:
            tasks.append(dataclasses.replace(t, probes=suites))
    return dataclasses.replace(stream, tasks=tuple(tasks)) if tasks else None


def ensure_known_subset(files: RunFiles, cfg: ExperimentConfig, stream: Stream, base_dir: Path, view,
                        progress: bool = True, numerics: dict | None = None) -> None:
    """Write ``eval/known_subset.json`` of a run, from the cache or by scoring ``view`` (a context
    manager giving the probe view of the *unmodified* base model). A no-op for a stream without
    pretrained tasks, or when the run already has the file."""
    target = known_subset_path(files)
    part = pretrained_part(stream)
    if part is None or target.exists():
        return

    def compute() -> dict:
        with view() as lm:
            row = evaluate_row(lm, part, cfg.eval, "known subset (base model)", progress)
        ids = {task: {suite: sorted(i["id"] for i in items if i["correct"]) for suite, items in suites.items()}
               for task, suites in row["items"].items()}
        totals = {task: {suite: len(items) for suite, items in suites.items()} for task, suites in row["items"].items()}
        return {"base_model": Path(base_dir).name, "stream": stream.name, "stream_fingerprint": stream.fingerprint(),
                "backend": cfg.model.backend, "ids": ids, "items": totals}

    subset, _ = cached(cfg, cache_key(cfg, stream, base_dir, KNOWN_SUBSET, numerics), "subset", compute)
    atomic_write_json(target, seal(subset))
