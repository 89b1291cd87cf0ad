"""A grid of runs: every (strategy, seed) of an experiment on one stream, sequential or in processes.

Everything that can be wrong with the input is checked before the first training step: the stream,
every strategy name and its options. The base model is built once, in this process, before any run.
Finished runs are skipped, interrupted ones resume (see ``clbench.run.one_run``).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from clbench.backends import get_backend
from clbench.config.experiment import ExperimentConfig, StrategySpec, strategy_specs
from clbench.data.streams import Stream, load_stream
from clbench.errors import ConfigError
from clbench.progress import bar


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
        return Path(cfg.model.path).expanduser()
    from clbench.modeling.tiny import build_base_model

    return build_base_model(cfg.model, stream, cfg.resolved_cache_dir(), progress)


def plan(cfg: ExperimentConfig) -> tuple[Stream, list[StrategySpec]]:
    """Load the stream and validate every strategy and its options for the configured backend
    (``model.backend``), before anything runs."""
    backend = get_backend(cfg.model.backend)
    if cfg.model.name:  # an unknown name or a missing package fails here, before anything runs
        from clbench.modeling.named import get_named, require_gguf_file

        require_gguf_file(get_named(cfg.model.name))
    stream = load_stream(cfg.stream)
    backend.check_stream(stream)
    specs = strategy_specs(cfg, backend.strategy_names())
    for spec in specs:
        backend.make_strategy(spec, 0, cfg)
    return stream, specs


def _worker(cfg, stream_path, spec, seed, base_dir, threads):
    import torch

    torch.set_num_threads(threads)
    return get_backend(cfg.model.backend).run_one(cfg, load_stream(stream_path), spec, seed, base_dir,
                                                  progress=False)


def run_grid(cfg: ExperimentConfig, progress: bool = True, echo=print) -> list[tuple[Path, str]]:
    """Run every (strategy, seed); returns ``(run directory, status)`` in grid order."""
    stream, specs = plan(cfg)
    run_one = get_backend(cfg.model.backend).run_one
    base_dir = base_model_dir(cfg, stream, progress)
    jobs = [(spec, seed) for spec in specs for seed in cfg.seeds]
    echo(f"clbench: {len(jobs)} runs ({len(specs)} strategies x {len(cfg.seeds)} seeds) on stream "
         f"'{stream.name}', base model {base_dir}")
    results: dict[int, tuple[Path, str]] = {}
    if cfg.jobs <= 1:
        for i, (spec, seed) in enumerate(jobs):
            echo(f"[{i + 1}/{len(jobs)}] {spec.run_label} seed {seed}")
            results[i] = run_one(cfg, stream, spec, seed, base_dir, progress)
            echo(f"    {results[i][1]}: {results[i][0]}")
    else:
        threads = cfg.train.threads or max(1, (os.cpu_count() or 1) // cfg.jobs)
        with ProcessPoolExecutor(cfg.jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_worker, cfg, stream.source, spec, seed, base_dir, threads): i
                       for i, (spec, seed) in enumerate(jobs)}
            try:
                for fut in bar(as_completed(futures), desc="runs", total=len(futures), enabled=progress):
                    i = futures[fut]
                    results[i] = fut.result()
                    echo(f"    {jobs[i][0].run_label} seed {jobs[i][1]}: {results[i][1]}: {results[i][0]}")
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
    return [results[i] for i in range(len(jobs))]
