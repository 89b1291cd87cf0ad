"""The grid plan: every strategy of an experiment looked up and its options resolved, once, before anything runs.

A :class:`GridEntry` is a grid row ready to run: the user's spec, the registered class, the options
resolved against the class's ``Options`` (defaults filled in, every key and bound checked), the plugins
of its ``with:`` (each resolved the same way) and its training config (the experiment's, with the row's
``train:`` / ``optimizer:`` overrides). The runner builds each run's strategy from it without validating
again, and ``config.json`` stores what was resolved — defaults included — so a result says exactly what
it ran with.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from clbench.backends import get_backend
from clbench.backends.base import unsupported
from clbench.config.experiment import ExperimentConfig, StrategySpec, TrainConfig, strategy_specs
from clbench.config.options import from_dict, to_dict
from clbench.data.streams import Stream, load_stream
from clbench.errors import ConfigError
from clbench.train import registry


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
        from clbench.train.plugin import Composed

        return Composed(strategy, [cls(options, strategy=strategy) for cls, options in self.plugins])


def resolve_entry(spec: StrategySpec, cfg: ExperimentConfig) -> GridEntry:
    """Look ``spec`` up and resolve its options for ``cfg.model.backend`` (unknown keys, bad values and a
    strategy the backend cannot run are errors naming the entry)."""
    where = f"strategies[{spec.run_label}]"
    cls = registry.get(spec.name)
    options = cls.options_from(spec.options, f"{where}.options")
    supported = cls.supported_backends(options)
    if cfg.model.backend not in supported:
        raise unsupported(spec.name, cfg.model.backend, supported, options, cls.options_for_backend(cfg.model.backend))
    plugins = []
    for i, item in enumerate(spec.with_):
        if not isinstance(item, (str, dict)) or (isinstance(item, dict) and set(item) - {"name", "options"}):
            raise ConfigError(f"{where}.with[{i}]", "a plugin is a name or {name, options}", ["name", "options"])
        name, raw = (item, {}) if isinstance(item, str) else (item.get("name"), item.get("options", {}))
        plugin = registry.get_plugin(name)
        if cfg.model.backend not in plugin.backends:
            raise unsupported(f"{spec.name} with {name}", cfg.model.backend, plugin.backends)
        plugins.append((plugin, plugin.options_from(raw, f"{where}.with[{i}].options")))
    overrides = {**spec.train, **({"optimizer": spec.optimizer} if spec.optimizer is not None else {})}
    train = from_dict(TrainConfig, {**to_dict(cfg.train), **overrides}, f"{where}.train") if overrides else None
    if (train or cfg.train).optimizer != "adamw" and cfg.model.backend != "torch":  # M3 is torch code so far
        raise ConfigError(f"{where}.train.optimizer", f"{(train or cfg.train).optimizer} (strategy {spec.name!r}) "
                          f"is not available with model.backend: {cfg.model.backend}", ["adamw"])
    return GridEntry(spec, cls, options, tuple(plugins), train)


def stored_options_match(entry: GridEntry, stored: dict) -> bool:
    """Whether options stored in a ``config.json`` are this entry's: stored resolved (now), or raw (results
    written before options were resolved), which resolve to the same values."""
    if stored == entry.options_dict:
        return True
    try:
        return to_dict(entry.cls.options_from(stored, "config.json strategy.options")) == entry.options_dict
    except ConfigError:
        return False


def runs_by_default(cls, name: str, backend: str) -> bool:
    """Whether strategy ``cls`` runs on ``backend`` with its default options (what ``all`` expands to;
    e.g. importance_tiers' default ``score: delta_w`` is torch's only, so MLX runs it when asked with
    ``score: lora_abs``)."""
    return backend in cls.backends and backend in cls.supported_backends(cls.options_from({}, name))


def plan(cfg: ExperimentConfig) -> tuple[Stream, list[GridEntry]]:
    """Load the stream and resolve every strategy and its options for the configured backend
    (``model.backend``), before anything runs."""
    backend = get_backend(cfg.model.backend)
    if cfg.model.name:  # an unknown name or a missing package fails here, before anything runs
        from clbench.modeling.named import get_named, require_gguf_file

        require_gguf_file(get_named(cfg.model.name))
    stream = load_stream(cfg.stream, cfg.allow_code)
    backend.check_stream(stream)
    names = [n for n in registry.names() if runs_by_default(registry.get(n), n, cfg.model.backend)]
    return stream, [resolve_entry(spec, cfg) for spec in strategy_specs(cfg, names)]
