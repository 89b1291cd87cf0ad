"""A grid of runs: every (strategy, task order, seed) of an experiment on one stream.

Swept strategies are tuned first on the validation probe items (``clbench.run.sweep``); the grid then
runs on the test items. Where runs execute — this process, a process pool, a Ray cluster — is the
executor's business (``clbench.run.executors``).

Everything that can be wrong with the input is checked before the first training step: the stream,
every strategy name and its options. The base model is built once, in this process, before any run.
Finished runs are skipped, interrupted ones resume (see ``clbench.run.one_run``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from clbench.backends import get_backend
from clbench.config.experiment import ExperimentConfig, StrategySpec, strategy_specs
from clbench.data.streams import Stream, load_stream
from clbench.results.files import atomic_write_json, safe_label
from clbench.run.executors import Job, make_executor
from clbench.run.orders import parse_orders, reorder
from clbench.run.probe_split import split_record, split_stream
from clbench.run.sweep import (
    Tuned,
    candidate_spec,
    pin,
    pinned_settings,
    pinned_yaml,
    plan_tuning,
    select,
    setting_text,
    tuning_config,
)


def base_model_dir(cfg: ExperimentConfig, stream: Stream, progress: bool = True) -> Path:
    """The local checkpoint every run starts from: the user's ``model.path`` or the embedded model
    (built with torch for either backend: the MLX backend loads the same checkpoint)."""
    if cfg.model.path:
        return Path(cfg.model.path).expanduser()
    from clbench.modeling.tiny import build_base_model

    return build_base_model(cfg.model, stream, cfg.resolved_cache_dir(), progress)


def plan(cfg: ExperimentConfig) -> tuple[Stream, list[StrategySpec]]:
    """Load the stream and validate every strategy and its options for the configured backend
    (``model.backend``), before anything runs."""
    backend = get_backend(cfg.model.backend)
    stream = load_stream(cfg.stream)
    backend.check_stream(stream)
    specs = strategy_specs(cfg, backend.strategy_names())
    for spec in specs:
        backend.make_strategy(spec, 0, cfg)
    return stream, specs


def grid_jobs(cfg: ExperimentConfig, stream: Stream, tuned: list[Tuned], base_dir: Path, split: bool) -> list[Job]:
    """Every (strategy, order, seed) of the grid; on the test items when the grid tunes."""
    source = split_stream(stream, "test", cfg.tuning.val_fraction, cfg.tuning.split_seed) if split else stream
    orders = parse_orders(cfg.orders, stream)
    return [Job(t.cfg, reorder(source, order), t.spec, seed, base_dir)
            for t in tuned for order in orders for seed in cfg.seeds]


def run_tuning(cfg: ExperimentConfig, stream: Stream, specs: list[StrategySpec], base_dir: Path, executor,
               progress: bool, echo) -> list[Tuned]:
    """Tune every swept strategy on the validation items (``clbench.run.sweep``); the rest unchanged."""
    backend = get_backend(cfg.model.backend)
    classes = {s.name: type(backend.make_strategy(s, 0, cfg)) for s in specs}

    def validate(spec, c):
        backend.make_strategy(spec, 0, c)  # unknown options or bad values fail here, before any run

    pinned = pinned_settings(cfg, specs, classes, validate)
    plans = plan_tuning(cfg, specs, classes, validate)
    if not plans and not pinned:
        return [Tuned(cfg, spec, None) for spec in specs]
    atomic_write_json(Path(cfg.results_dir) / safe_label(cfg.name) / safe_label(stream.name) / "probe_split.json",
                      split_record(stream, cfg.tuning.val_fraction, cfg.tuning.split_seed))
    if not plans:
        return [pin(cfg, stream.name, s, pinned[s.run_label]) if s.run_label in pinned else Tuned(cfg, s, None)
                for s in specs]
    val = split_stream(stream, "validation", cfg.tuning.val_fraction, cfg.tuning.split_seed)
    t_cfg = tuning_config(cfg)
    jobs, owners = [], []
    for spec in specs:
        if spec.run_label in plans:
            for setting, c_cfg, c_spec in plans[spec.run_label][1]:
                jobs.append(Job(replace(c_cfg, name=t_cfg.name), val, candidate_spec(spec, setting, c_spec.options),
                                cfg.tuning.seed, base_dir))
                owners.append(spec.run_label)
    echo(f"clbench: tuning {len(plans)} strategies: {len(jobs)} candidate runs (seed {cfg.tuning.seed}, "
         f"validation items)")
    outcomes = executor.run(jobs, progress, echo)
    tuned = []
    for spec in specs:
        if spec.run_label in pinned:
            tuned.append(pin(cfg, stream.name, spec, pinned[spec.run_label]))
            continue
        if spec.run_label not in plans:
            tuned.append(Tuned(cfg, spec, None))
            continue
        space, rows = plans[spec.run_label]
        mine = [o for o, owner in zip(outcomes, owners) if owner == spec.run_label]
        t = select(cfg, stream.name, spec, space, rows, mine, stream.spec.primary_metric)
        echo(f"    {spec.run_label}: chose {setting_text(t.record['chosen'])} ({t.record['reason']})")
        tuned.append(t)
    echo(f"clbench: to reuse these choices without rerunning the candidates, put in the experiment file:\n"
         f"{pinned_yaml(tuned)}")
    return tuned


def run_grid(cfg: ExperimentConfig, progress: bool = True, echo=print, executor=None) -> list[tuple[Path, str]]:
    """Tune the swept strategies, then run every (strategy, order, seed); returns ``(run directory,
    status)`` in grid order. ``executor`` defaults to the config's (``clbench.run.executors``)."""
    stream, specs = plan(cfg)
    parse_orders(cfg.orders, stream)  # a bad order is refused before anything runs
    executor = executor or make_executor(cfg)
    base_dir = base_model_dir(cfg, stream, progress)
    tuned = run_tuning(cfg, stream, specs, base_dir, executor, progress, echo)
    jobs = grid_jobs(cfg, stream, tuned, base_dir, split=any(t.record for t in tuned))
    n_orders = len(parse_orders(cfg.orders, stream))
    echo(f"clbench: {len(jobs)} runs ({len(specs)} strategies x {n_orders} order{'s' if n_orders > 1 else ''} x "
         f"{len(cfg.seeds)} seeds) on stream '{stream.name}', base model {base_dir}")
    outcomes = executor.run(jobs, progress, echo)
    return [(o.path, o.status) for o in outcomes]
