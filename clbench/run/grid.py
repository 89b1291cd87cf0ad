"""A grid of runs: every (strategy, seed) of an experiment on one stream, sequential or in processes.

Everything that can be wrong with the input is checked before the first training step: the stream,
every strategy name and its options (resolved once, ``clbench.run.plan``). The base model is built once, in this process, before any run.
Finished runs are skipped, interrupted ones resume (see ``clbench.run.one_run``).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from clbench.config.experiment import ExperimentConfig
from clbench.data.streams import Stream, load_stream
from clbench.errors import ConfigError
from clbench.progress import bar
from clbench.run.one_run import run_one
from clbench.run.plan import plan


def base_model_dir(cfg: ExperimentConfig, stream: Stream, progress: bool = True) -> Path:
    """The local checkpoint every run starts from: a named model's converted folder, the user's
    ``model.path``, or the embedded model (built with torch for either backend: the MLX backend loads
    the same checkpoint)."""
    if cfg.model.name and cfg.model.path:
        raise ConfigError("model", "give model.name or model.path, not both")
    if cfg.model.name:
        from clbench.modeling.named import resolve_named_model

        return resolve_named_model(cfg.model.name, cfg.resolved_cache_dir())
    if cfg.model.path:
        from clbench.modeling.loading import check_checkpoint

        return check_checkpoint(cfg.model.path, cfg.model.trust_remote_code)
    from clbench.modeling.tiny import build_base_model

    return build_base_model(cfg.model, stream, cfg.resolved_cache_dir(), progress)


def _worker(cfg, stream_path, entry, seed, base_dir, threads, wait=False):
    import torch

    torch.set_num_threads(threads)
    return run_one(cfg, load_stream(stream_path, cfg.allow_code), entry, seed, base_dir, progress=False, wait=wait)


def run_grid(cfg: ExperimentConfig, progress: bool = True, echo=print, wait: bool = False) -> list[tuple[Path, str]]:
    """Run every (strategy, seed); returns ``(run directory, status)`` in grid order. A run another
    process is writing is skipped (status ``"locked"``), or, with ``wait``, waited for."""
    stream, entries = plan(cfg)
    base_dir = base_model_dir(cfg, stream, progress)
    jobs = [(entry, seed) for entry in entries for seed in cfg.seeds]
    echo(f"clbench: {len(jobs)} runs ({len(entries)} strategies x {len(cfg.seeds)} seeds) on stream "
         f"'{stream.name}', base model {base_dir}")
    results: dict[int, tuple[Path, str]] = {}
    if cfg.jobs <= 1:
        for i, (entry, seed) in enumerate(jobs):
            echo(f"[{i + 1}/{len(jobs)}] {entry.spec.run_label} seed {seed}")
            results[i] = run_one(cfg, stream, entry, seed, base_dir, progress, wait=wait)
            echo(f"    {results[i][1]}: {results[i][0]}")
    else:
        threads = cfg.train.threads or max(1, (os.cpu_count() or 1) // cfg.jobs)
        with ProcessPoolExecutor(cfg.jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_worker, cfg, stream.source, entry, seed, base_dir, threads, wait): i
                       for i, (entry, seed) in enumerate(jobs)}
            try:
                for fut in bar(as_completed(futures), desc="runs", total=len(futures), enabled=progress):
                    i = futures[fut]
                    results[i] = fut.result()
                    echo(f"    {jobs[i][0].spec.run_label} seed {jobs[i][1]}: {results[i][1]}: {results[i][0]}")
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
    return [results[i] for i in range(len(jobs))]
