"""Composable pieces: a plugin adds a loss term or a behaviour to whatever strategy a grid entry names.

Composition is configuration. A grid entry ``{name: layer_tiers, with: [surprise]}`` (or
``with: [{name: surprise, options: {layers: [-1], weights: [0.1]}}]``) runs ``layer_tiers`` with the
``surprise`` plugin: no proxy class, no base-strategy option. A plugin is one class with
``@register_plugin("name")`` (``clbench.train.registry``) and a frozen ``Options`` dataclass; it
overrides only the hooks it needs. :class:`Composed` runs them around the strategy's own (how to write
one: ``docs/composition.md``):

* ``prepare_model(model)`` — after the strategy's (e.g. choose blocks, add a module);
* ``before_task`` / ``before_step`` / ``after_task`` — after the strategy's;
* ``loss(model, batch, inner)`` — wraps the loss: ``inner(model, batch)`` is the strategy's loss (or the
  previous plugin's), and the plugin returns a ``LossOutput`` with its term added;
* ``after_update(ctx)`` — after the strategy applied this step's gradients;
* ``step_log`` / ``diagnostics`` / ``checkpoint_metadata`` / ``state_dict`` — merged with the strategy's.

A plugin is given the strategy's backend (``self.backend``) and a read-only view of its trainable
parameters (``self.trainable``, ``self.params(model)``) — nothing else of it, so a plugin cannot rewire the
strategy it is added to (:func:`attach` builds one so).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

from clbench.train.types import LossOutput


class Plugin:
    """Base class of the composable pieces (every hook a no-op)."""

    @dataclass(frozen=True)
    class Options:
        pass

    name: str = "plugin"
    backends: ClassVar[tuple[str, ...]] = ("torch", "mlx")
    family: str = "other"  # a run with this plugin is drawn with this family (clbench.reporting.looks)
    # where its options are in the experiment file, for an error found while running (the grid plan sets it
    # to ``strategies[<label>].with[<i>].options``)
    where: str = "with[].options"

    def __init__(self, options=None, *, backend, trainable: Callable[[], Mapping[str, Any]], where: str | None = None):
        """``trainable()``: the strategy's trainable parameters ``{name: parameter}`` as they are now (the
        strategy fixes them after ``prepare_model``, so the plugin asks when it needs them)."""
        self.options = options if options is not None else self.Options()
        self.backend = backend
        self._trainable = trainable
        if where is not None:
            self.where = where

    @property
    def trainable(self) -> Mapping[str, Any]:
        """The strategy's trainable parameters, ``{name: parameter}``, read-only (empty before the model is
        prepared)."""
        return MappingProxyType(self._trainable())

    def params(self, model) -> dict:
        """Current values of the trainable parameters (inside :meth:`loss`: the ones being differentiated)."""
        return self.backend.parameters(model, self.trainable)

    @classmethod
    def options_from(cls, data: dict, where: str):
        from clbench.config.options import from_dict

        return from_dict(cls.Options, data, where)

    @classmethod
    def describe(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    def prepare_model(self, model):
        return model

    def before_task(self, task, model) -> None:
        pass

    def before_step(self, step: int) -> None:
        pass

    def loss(self, model, batch: dict, inner: Callable) -> LossOutput:
        return inner(model, batch)

    def after_update(self, ctx) -> None:
        pass

    def after_task(self, task, model) -> None:
        pass

    def step_log(self) -> dict:
        return {}

    def diagnostics(self) -> dict:
        return {}

    def checkpoint_metadata(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Composed:
    """A strategy with plugins, seen by the runner and the step as one strategy: each hook runs the
    strategy's own, then every plugin's in the order the grid entry lists them; the loss is the strategy's
    wrapped by each plugin in turn. Everything else (the trainable set, the optimizer groups, the
    checkpoint tensors, ``grad_names``, ``apply_update``) is the strategy's alone."""

    def __init__(self, strategy, plugins: list[Plugin]):
        self.strategy = strategy
        self.plugins = list(plugins)

    # --- what the runner reads ---------------------------------------------------------------------
    def __getattr__(self, item):  # name, trains, backend, train, options, trainable, trainable_parameters
        return getattr(self.strategy, item)

    # --- set-up -------------------------------------------------------------------------------------
    def prepare_model(self, model):
        model = self.strategy.prepare_model(model)
        for p in self.plugins:
            model = p.prepare_model(model)
        return model

    def mark_trainable(self, model) -> None:
        self.strategy.mark_trainable(model)

    def param_groups(self):
        return self.strategy.param_groups()

    # --- per task -----------------------------------------------------------------------------------
    def observe_pretrained(self, task) -> None:
        self.strategy.observe_pretrained(task)

    def training_examples(self, task):
        return self.strategy.training_examples(task)

    def before_task(self, task, model) -> None:
        self.strategy.before_task(task, model)
        for p in self.plugins:
            p.before_task(task, model)

    def after_task(self, task, model) -> None:
        self.strategy.after_task(task, model)
        for p in self.plugins:
            p.after_task(task, model)

    # --- per step -----------------------------------------------------------------------------------
    def before_step(self, step: int) -> None:
        self.strategy.before_step(step)
        for p in self.plugins:
            p.before_step(step)

    def grad_names(self, step: int):
        return self.strategy.grad_names(step)

    def loss(self, model, batch):
        fn = self.strategy.loss
        for p in self.plugins:
            fn = _wrapped(p, fn)
        return fn(model, batch)

    def apply_update(self, ctx) -> int:
        updated = self.strategy.apply_update(ctx)
        for p in self.plugins:
            p.after_update(ctx)
        return updated

    # --- logs, persistence --------------------------------------------------------------------------
    def step_log(self) -> dict:
        return _merged(self.strategy.step_log(), (p.step_log() for p in self.plugins))

    def diagnostics(self) -> dict:
        return _merged(self.strategy.diagnostics(), (p.diagnostics() for p in self.plugins))

    def checkpoint_metadata(self) -> dict:
        return _merged(self.strategy.checkpoint_metadata(), (p.checkpoint_metadata() for p in self.plugins))

    def checkpoint_tensors(self, model):
        return self.strategy.checkpoint_tensors(model)

    def load_checkpoint_tensors(self, model, tensors) -> None:
        self.strategy.load_checkpoint_tensors(model, tensors)

    def state_dict(self) -> dict:
        return {"strategy": self.strategy.state_dict(), "plugins": [p.state_dict() for p in self.plugins]}

    def load_state_dict(self, state: dict) -> None:
        self.strategy.load_state_dict(state.get("strategy", {}))
        for p, s in zip(self.plugins, state.get("plugins", [])):
            p.load_state_dict(s)


def attach(cls: type[Plugin], options, strategy, where: str | None = None) -> Plugin:
    """A ``cls`` plugin for ``strategy``, given only its backend and its trainable parameters; ``where``: its
    options' place in the experiment file, for errors found while running."""
    return cls(options, backend=strategy.backend, trainable=lambda: strategy.trainable, where=where)


def _wrapped(plugin: Plugin, inner: Callable) -> Callable:
    def loss(model, batch):
        return plugin.loss(model, batch, inner)

    return loss


def _merged(first: dict, others) -> dict:
    out = dict(first)
    for d in others:
        out.update(d)
    return out
