"""A grid of runs: every (strategy, task order, seed) of an experiment on one stream.

Everything that can be wrong with the input is checked before anything is written: the stream, every
strategy name and its options (resolved once, ``clbench.run.plan``), the task orders, and every row as
it will run — as written, each tuning candidate, each pinned setting — on the stream
(``clbench.run.sweep.plan_settings``: a chunk that never completes, under the row's label). The base model is built once, in this process, before any run. Swept strategies are
tuned first on the validation probe items (``clbench.run.sweep``); the grid then runs on the test
items. Where runs execute — this process, a process pool, a Ray cluster — is the executor's business
(``clbench.run.executors``). Finished runs are skipped, interrupted ones resume (see
``clbench.run.one_run``).
"""

from __future__ import annotations

from pathlib import Path

from clbench.config.experiment import ExperimentConfig
from clbench.data.streams import Stream
from clbench.errors import ConfigError
from clbench.results.files import atomic_write_json, probe_split_file
from clbench.run.checks import check_logging, check_outputs
from clbench.run.executors import Job, make_executor
from clbench.run.orders import parse_orders, reorder
from clbench.run.plan import GridEntry, plan, run_spec
from clbench.run.probe_split import scores_test_items, split_record, split_stream
from clbench.run.sweep import (
    Tuned,
    pin,
    pinned_yaml,
    plan_settings,
    select,
    setting_text,
    tuning_config,
)


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

    return build_base_model(cfg.model, stream, cfg.resolved_cache_dir(), progress, threads=cfg.train.threads)


def grid_jobs(cfg: ExperimentConfig, stream: Stream, tuned: list[Tuned], base_dir: Path, split: bool,
              wait: bool = False) -> list[Job]:
    """Every (strategy, order, seed) of the grid; on the test items when the grid tunes."""
    source = split_stream(stream, "test", cfg.tuning.val_fraction, cfg.tuning.split_seed) if split else stream
    orders = parse_orders(cfg.orders, stream)
    return [Job(run_spec(cfg, reorder(source, order), t.entry, seed, base_dir), wait)
            for t in tuned for order in orders for seed in cfg.seeds]


def run_tuning(cfg: ExperimentConfig, stream: Stream, entries: list[GridEntry], settings: tuple[dict, dict],
               base_dir: Path, executor, progress: bool, echo, wait: bool = False) -> list[Tuned]:
    """Tune every swept strategy on the validation items (``clbench.run.sweep``); pinned ones take their
    pinned setting; the rest are unchanged. ``settings``: the grid's ``(pinned, plans)``
    (``clbench.run.sweep.plan_settings``)."""
    pinned, plans = settings
    if not plans and not pinned:
        return [Tuned(entry, None) for entry in entries]
    outcomes: dict[str, list] = {}
    if plans:
        val = split_stream(stream, "validation", cfg.tuning.val_fraction, cfg.tuning.split_seed)
        t_cfg = tuning_config(cfg)
        jobs = [Job(run_spec(t_cfg, val, candidate, cfg.tuning.seed, base_dir), wait)
                for _, rows in plans.values() for _, candidate in rows]
        echo(f"clbench: tuning {len(plans)} strategies: {len(jobs)} candidate runs (seed {cfg.tuning.seed}, "
             f"validation items)")
        done = iter(executor.run(jobs, progress, echo))
        outcomes = {label: [next(done) for _ in rows] for label, (_, rows) in plans.items()}
    tuned = []
    for entry in entries:
        label = entry.spec.run_label
        if label in pinned:
            tuned.append(pin(cfg, stream.name, *pinned[label]))
        elif label in plans:
            space, rows = plans[label]
            t = select(cfg, stream.name, entry, space, rows, outcomes[label], stream.spec.primary_metric)
            echo(f"    {label}: chose {setting_text(t.record['chosen'])} ({t.record['reason']})")
            tuned.append(t)
        else:
            tuned.append(Tuned(entry, None))
    if plans:
        echo(f"clbench: to reuse these choices without rerunning the candidates, put in the experiment file:\n"
             f"{pinned_yaml(tuned)}")
    return tuned


def run_grid(cfg: ExperimentConfig, progress: bool = True, echo=print, wait: bool = False,
             executor=None) -> list[tuple[Path, str]]:
    """Tune the swept strategies, then run every (strategy, order, seed); returns ``(run directory,
    status)`` in grid order. A run another process is writing is skipped (status ``"locked"``), or, with
    ``wait``, waited for. ``executor`` defaults to the config's (``clbench.run.executors``)."""
    stream, entries = plan(cfg)
    orders = parse_orders(cfg.orders, stream)  # a bad order is refused before anything runs
    check_outputs(cfg)  # outputs and logging checked before anything is written
    check_logging(cfg.log)
    settings = plan_settings(cfg, entries, stream)  # every row as it will run, checked on the stream
    executor = executor or make_executor(cfg)
    base_dir = base_model_dir(cfg, stream, progress)
    pinned, plans = settings
    split = scores_test_items(cfg, stream.name, bool(pinned or plans))  # as the dry run decides it
    if split:  # which items are validation and which test: written once, before any run uses the split
        atomic_write_json(probe_split_file(cfg, stream.name),
                          split_record(stream, cfg.tuning.val_fraction, cfg.tuning.split_seed))
    tuned = run_tuning(cfg, stream, entries, settings, base_dir, executor, progress, echo, wait)
    jobs = grid_jobs(cfg, stream, tuned, base_dir, split, wait)
    echo(f"clbench: {len(jobs)} runs ({len(entries)} strategies x {len(orders)} order{'s' if len(orders) > 1 else ''}"
         f" x {len(cfg.seeds)} seeds) on stream '{stream.name}', base model {base_dir}")
    outcomes = executor.run(jobs, progress, echo)
    return [(o.path, o.status) for o in outcomes]
