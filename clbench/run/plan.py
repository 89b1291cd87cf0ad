"""The grid plan: every strategy of an experiment looked up and its options resolved, once, before anything runs.

A :class:`GridEntry` is a grid row ready to run: the user's spec, the registered class, the options
resolved against the class's ``Options`` (defaults filled in, every key and bound checked), the plugins
of its ``with:`` (each resolved the same way) and its training config (the experiment's, with the row's
``train:`` / ``optimizer:`` overrides). :func:`check_entry` runs the strategy's ``check_plan`` on the
stream (a chunk that never completes is refused, under the row's label) — for every row as it will run
(as written, or with each tuning candidate's or its pinned setting: ``clbench.run.sweep.plan_settings``),
for the whole grid before anything is written.
The runner builds each run's strategy from it without validating again, and ``config.json`` stores what
was resolved — defaults included — so a result says exactly what it ran with.

A :class:`RunSpec` is one run of a row, every fact of it worked out once: the row's config, the stream in
the run's task order with its probe split, the seed, the base model and the run's files
(:class:`clbench.results.files.RunFiles`). ``clbench.run.one_run.run_one`` takes nothing else.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

from clbench.backends import get_backend
from clbench.backends.base import unsupported
from clbench.config.experiment import ExperimentConfig, StrategySpec, TrainConfig, strategy_specs
from clbench.config.options import from_dict, to_dict, with_moved_keys
from clbench.data.streams import Stream, load_stream
from clbench.errors import ConfigError
from clbench.results.files import RunFiles
from clbench.train import registry
from clbench.train.types import RunPlan


@dataclass(frozen=True)
class GridEntry:
    spec: StrategySpec
    cls: type
    options: object  # an instance of cls.Options
    plugins: tuple = ()  # ((plugin class, its resolved options), ...), in the order of ``with:``
    train: TrainConfig | None = None  # the row's training config; None: the experiment's

    @property
    def options_dict(self) -> dict:
        return to_dict(self.options)

    @property
    def plugins_list(self) -> list[dict]:
        return [{"name": cls.name, "options": to_dict(options)} for cls, options in self.plugins]

    def config(self, cfg: ExperimentConfig) -> ExperimentConfig:
        """The experiment config this row runs with (its own training fields, if it has any)."""
        return cfg if self.train is None else replace(cfg, train=self.train)

    def make(self, seed: int, cfg: ExperimentConfig, backend):
        """A fresh strategy of this entry (with its plugins) for one run on ``backend``."""
        strategy = self.cls(self.options, seed=seed, train=cfg.train, backend=backend)
        if not self.plugins:
            return strategy
        from clbench.train.plugin import Composed, attach

        # each plugin's place in the experiment file, for errors found while running
        return Composed(strategy, [attach(cls, options, strategy, f"strategies[{self.spec.run_label}].with[{i}].options")
                                   for i, (cls, options) in enumerate(self.plugins)])


def run_plan(cfg: ExperimentConfig, stream: Stream) -> RunPlan:
    """What a run of ``cfg`` (a row's config) on ``stream`` will do, for ``Strategy.check_plan``."""
    return RunPlan(steps_per_task=cfg.train.steps_per_task, trained_tasks=len(stream.trained_indices),
                   grad_accum=cfg.train.grad_accum, max_length=cfg.model.max_length,
                   reset_optimizer=cfg.train.reset_optimizer)


def check_entry(entry: GridEntry, cfg: ExperimentConfig, stream: Stream) -> None:
    """The strategy's ``check_plan`` for a run of ``entry`` on ``stream``: what its options cannot do there
    is an error naming the row (``strategies[<label>]...``)."""
    entry.cls.check_plan(entry.options, run_plan(entry.config(cfg), stream), f"strategies[{entry.spec.run_label}]")


def resolve_entry(spec: StrategySpec, cfg: ExperimentConfig, stream: Stream | None = None) -> GridEntry:
    """Look ``spec`` up and resolve its options for ``cfg.model.backend`` (unknown keys, bad values and a
    strategy the backend cannot run are errors naming the entry); with the ``stream`` it will run on,
    checked there too (:func:`check_entry`)."""
    where = f"strategies[{spec.run_label}]"
    cls = registry.get(spec.name)
    options = cls.options_from(spec.options, f"{where}.options")
    supported = cls.supported_backends(options)
    if cfg.model.backend not in supported:
        raise unsupported(spec.name, cfg.model.backend, supported, options, cls.options_for_backend(cfg.model.backend))
    plugins = []
    if spec.with_ and not cls.trains:
        raise ConfigError(f"{where}.with", f"strategy {spec.name!r} trains nothing, so a plugin (which changes "
                          "training) would change nothing; remove 'with'")
    seen: dict[str, int] = {}
    for i, item in enumerate(spec.with_):
        if not isinstance(item, (str, dict)) or (isinstance(item, dict) and set(item) - {"name", "options"}):
            raise ConfigError(f"{where}.with[{i}]", "a plugin is a name or {name, options}", ["name", "options"])
        name, raw = (item, {}) if isinstance(item, str) else (item.get("name"), item.get("options", {}))
        if not isinstance(name, str):
            raise ConfigError(f"{where}.with[{i}].name", f"expected a plugin name, got {name!r}",
                              registry.plugin_names())
        if name in seen:
            raise ConfigError(f"{where}.with[{i}]", f"plugin {name!r} is also with[{seen[name]}]; a plugin is "
                              "added once (give it the options it needs there)")
        seen[name] = i
        plugin = registry.get_plugin(name)
        if cfg.model.backend not in plugin.backends:
            raise unsupported(f"{spec.name} with {name}", cfg.model.backend, plugin.backends)
        plugins.append((plugin, plugin.options_from(raw, f"{where}.with[{i}].options")))
    overrides = {**spec.train, **({"optimizer": spec.optimizer} if spec.optimizer is not None else {})}
    train = from_dict(TrainConfig, {**to_dict(cfg.train), **overrides}, f"{where}.train") if overrides else None
    if (train or cfg.train).optimizer != "adamw" and cfg.model.backend != "torch":  # M3 is torch code so far
        raise ConfigError(f"{where}.train.optimizer", f"{(train or cfg.train).optimizer} (strategy {spec.name!r}) "
                          f"is not available with model.backend: {cfg.model.backend}", ["adamw"])
    entry = GridEntry(spec, cls, options, tuple(plugins), train)
    if stream is not None:
        check_entry(entry, cfg, stream)
    return entry


def stored_options_match(entry: GridEntry, stored: dict) -> bool:
    """Whether options stored in a ``config.json`` are this entry's: stored resolved (now), or raw (results
    written before options were resolved), or with keys that have moved since (``lora.rank`` was ``rank``),
    which resolve to the same values."""
    if stored == entry.options_dict:
        return True
    try:
        stored = with_moved_keys(entry.cls.Options, stored)
        return to_dict(entry.cls.options_from(stored, "config.json strategy.options")) == entry.options_dict
    except ConfigError:
        return False


def runs_by_default(cls, name: str, backend: str) -> bool:
    """Whether strategy ``cls`` runs on ``backend`` with its default options (what ``all`` expands to;
    e.g. importance_tiers' default ``score: delta_w`` is torch's only, so MLX runs it when asked with
    ``score: lora_abs``)."""
    return (cls.in_all and backend in cls.backends
            and backend in cls.supported_backends(cls.options_from({}, name)))


def warn_pretrained_records(cfg: ExperimentConfig, stream: Stream) -> list[str]:
    """``pretrained: true`` means two things: with the embedded model the task's training records are its
    pretraining data; with a real model (``model.name`` or ``model.path``) the task is known already and never
    trained. A stream written for the one silently does the other, so a real model meeting a pretrained
    task that has training records says so, one line per task on stderr (returned too)."""
    model = (f"model.name {cfg.model.name}" if cfg.model.name else f"model.path {cfg.model.path}"
             if cfg.model.path else None)
    if model is None:
        return []
    lines = [f"clbench: warning: task {t.name!r} of stream {stream.name!r} is 'pretrained: true': its "
             f"{len(t.train)} training records are not trained on with a real model ({model}); they only "
             "pretrain the embedded model (and strategies that replay pretraining data, replay and joint, draw "
             "on them); to train on them, drop 'pretrained: true'"
             for t in stream.pretrained_tasks if t.train]
    for line in lines:
        print(line, file=sys.stderr)
    return lines


def plan(cfg: ExperimentConfig) -> tuple[Stream, list[GridEntry]]:
    """Load the stream and resolve every strategy and its options for the configured backend
    (``model.backend``), before anything runs; a real model meeting a pretrained task with training records
    is warned about here, once per grid (:func:`warn_pretrained_records`)."""
    backend = get_backend(cfg.model.backend)
    if cfg.model.name:  # an unknown name or a missing package fails here, before anything runs
        from clbench.modeling.named import get_named, require_gguf_file

        require_gguf_file(get_named(cfg.model.name))
    stream = load_stream(cfg.stream, cfg.allow_code)
    backend.check_stream(stream)
    warn_pretrained_records(cfg, stream)
    names = [n for n in registry.names() if runs_by_default(registry.get(n), n, cfg.model.backend)]
    return stream, [resolve_entry(spec, cfg) for spec in strategy_specs(cfg, names)]


@dataclass(frozen=True)
class RunSpec:
    """One run, every fact of it worked out once (picklable: a worker process or node gets it whole)."""

    cfg: ExperimentConfig  # the row's config: the experiment's, with the row's own training fields
    stream: Stream  # as the run sees it: in its task order, with its probe split (validation or test items)
    entry: GridEntry  # the resolved strategy, options and plugins
    seed: int
    base_dir: Path  # the base model's checkpoint
    files: RunFiles  # the run's directory and every path inside it

    @property
    def title(self) -> str:
        order = self.stream.derived.get("order")
        where = f" order {order['name']}" if order else ""
        return f"{self.entry.spec.run_label}{where} seed {self.seed}"


def run_spec(cfg: ExperimentConfig, stream: Stream, entry: GridEntry, seed: int, base_dir: Path) -> RunSpec:
    """The run of row ``entry`` with ``seed`` on ``stream`` (already in the run's order and probe split)."""
    row = entry.config(cfg)
    order = stream.derived.get("order")
    files = RunFiles.of(row, stream.name, entry.spec.run_label, seed, order["name"] if order else None)
    return RunSpec(row, stream, entry, seed, Path(base_dir), files)
