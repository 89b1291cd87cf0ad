"""The reference and base rows, computed once per model and stream and reused by every run.

Neither row depends on the strategy or the seed: ``reference`` scores a randomly initialised model of
the base model's architecture (its seed is ``model.seed + 1``), ``base`` scores the base model as loaded,
before any strategy's ``prepare_model``. A grid of 13 strategies × 3 seeds used to evaluate both 39
times; now the first run computes them and the others copy them.

The cache lives in the clbench cache folder (``rows/<key>.json``, written atomically, with a checksum of
its content that is verified when it is read: ``clbench.results.integrity``); the key is a hash of
everything a row depends on:

* the checkpoint: its resolved path and the name, size and modification time of every file in it
  (a rebuilt or replaced model recomputes);
* the stream: its fingerprint (every probe item and training record) after any chat template;
* how rows are scored: backend, device type, dtype, the backend's resolved numerics (device, dtype,
  autocast: ``model.autocast: auto`` resolves per machine), ``eval.max_new_tokens``, the reference seed, and
  :data:`SCORING_VERSION` (bumped when a scoring rule of ``clbench.eval`` changes).

Two runs that start at once may both compute a missing row; both write the same content atomically,
so the last write wins harmlessly. Every run still gets its own ``eval/reference.json`` and
``eval/base.json`` with the per-item predictions, copied from the cache, so the results format is
unchanged (the row names its cache file, ``"cache_file"``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from clbench.config.experiment import ExperimentConfig, config_dict
from clbench.data.streams import Stream
from clbench.paths import inside
from clbench.results.files import atomic_write_json, read_json
from clbench.results.integrity import seal, unseal

SCORING_VERSION = 2  # bump when a probe's scoring rule changes, so cached rows are recomputed (2: token trees)


def checkpoint_fingerprint(path: Path) -> dict:
    """What identifies a checkpoint folder's contents without reading its weights."""
    path = Path(path).resolve()
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    return {"path": str(path),
            "files": [[str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]}


def row_key(cfg: ExperimentConfig, stream: Stream, base_dir: Path, which: str, numerics: dict | None = None) -> dict:
    """Everything the ``which`` row (``"reference"`` or ``"base"``) depends on; ``numerics`` is the
    backend's (``Backend.numerics``)."""
    model = config_dict(cfg.model)
    return {"row": which, "scoring_version": SCORING_VERSION, "checkpoint": checkpoint_fingerprint(base_dir),
            "stream": {"name": stream.name, "fingerprint": stream.fingerprint()},
            "backend": model.get("backend", "torch"), "device": str(model.get("device")),
            "dtype": str(model.get("dtype")), "chat": bool(cfg.model.use_chat_template),
            "numerics": numerics or {}, "max_new_tokens": cfg.eval.max_new_tokens,
            "reference_seed": cfg.model.seed + 1 if which == "reference" else None}


def cache_path(cfg: ExperimentConfig, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return inside(cfg.resolved_cache_dir(), "rows", f"{key['row']}-{digest}.json")


def fixed_row(cfg: ExperimentConfig, stream: Stream, base_dir: Path, which: str, compute: Callable[[], dict],
              numerics: dict | None = None) -> dict:
    """The ``which`` row from the cache, or ``compute()`` it and cache it; the returned row says which
    cache file it is (``cache_file``)."""
    key = row_key(cfg, stream, base_dir, which, numerics)
    path = cache_path(cfg, key)
    if path.exists():
        cached = unseal(read_json(path), path)  # changed since written: refused; no checksum (older): recomputed
        if cached is not None and cached.get("key") == key:  # a hash collision recomputes
            return {**cached["row"], "cache_file": path.name}
    row = compute()
    atomic_write_json(path, seal({"key": key, "row": row}))
    return {**row, "cache_file": path.name}
