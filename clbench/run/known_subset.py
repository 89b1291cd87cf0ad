"""The known subset of a stream's pretrained tasks: decided once per base model, on the unmodified model.

Which items of a pretrained task the base model gets right is a property of the model and the
probes, not of a strategy: so it is computed from the model exactly as loaded (before any strategy's
``prepare_model``), stored in the clbench cache under a key of the base model folder, the stream's
fingerprint, the backend, the generation length and the mixed precision (``model.autocast``, as resolved:
the subset is what the base row of the grid gets right), and copied into every run
(``eval/known_subset.json``). Every strategy and seed of a grid therefore scores the same subset, and
a rerun months later reuses it. How the subset is used: ``clbench.results.breakdown``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from clbench.config.experiment import ExperimentConfig
from clbench.data.probe_kinds import RIGHT_OR_WRONG_KINDS
from clbench.data.streams import Stream
from clbench.eval.rows import evaluate_row
from clbench.paths import component, inside
from clbench.results.breakdown import known_subset_path
from clbench.results.files import RunFiles, atomic_write_bytes, atomic_write_json, read_json
from clbench.results.integrity import seal, unseal


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


def cache_path(cfg: ExperimentConfig, stream: Stream, base_dir: Path, numerics: dict | None = None) -> Path:
    key = f"{Path(base_dir).name}-{stream.fingerprint()}-{cfg.model.backend}-{cfg.eval.max_new_tokens}"
    key += "-chat" if cfg.model.use_chat_template else ""
    autocast = (numerics or {}).get("autocast", "none")
    key += f"-autocast-{autocast}" if autocast != "none" else ""  # files of full-precision runs keep their names
    return inside(cfg.resolved_cache_dir(), "known_subsets", f"{component(key)}.json")


def ensure_known_subset(files: RunFiles, cfg: ExperimentConfig, stream: Stream, base_dir: Path, view,
                        progress: bool = True, numerics: dict | None = None) -> None:
    """Write ``eval/known_subset.json`` of a run, from the cache or by scoring ``view`` (a context
    manager giving the probe view of the *unmodified* base model). A no-op for a stream without
    pretrained tasks, or when the run already has the file."""
    target = known_subset_path(files)
    part = pretrained_part(stream)
    if part is None or target.exists():
        return
    cached = cache_path(cfg, stream, base_dir, numerics)
    if not cached.exists() or unseal(read_json(cached), cached) is None:  # changed: refused; no checksum: redone
        with view() as lm:
            row = evaluate_row(lm, part, cfg.eval, "known subset (base model)", progress)
        ids = {task: {suite: sorted(i["id"] for i in items if i["correct"]) for suite, items in suites.items()}
               for task, suites in row["items"].items()}
        totals = {task: {suite: len(items) for suite, items in suites.items()} for task, suites in row["items"].items()}
        atomic_write_json(cached, seal({"base_model": Path(base_dir).name, "stream": stream.name,
                                        "stream_fingerprint": stream.fingerprint(), "backend": cfg.model.backend,
                                        "ids": ids, "items": totals}))
    atomic_write_bytes(target, cached.read_bytes())
