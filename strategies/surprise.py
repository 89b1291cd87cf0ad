"""Surprise-based auxiliary objectives (seed 003) on top of any other strategy.

Selected transformer blocks ℓ are asked to predict their surprise signal ``∇_{y_ℓ} L`` (the gradient of
the main loss — the base strategy's loss — with respect to the block's output hidden state, captured
with forward hooks): the objective becomes
``L + Σ λ_ℓ mean((y_ℓ − ∇_{y_ℓ}L)²)`` (math in ``clbench.train.surprise``), added at task steps that are
multiples of ``every_n``; ``enabled: false`` turns it off for ablations.

Composition is configuration, not a class: ``base`` names the registered strategy that prepares the
model and applies the updates (its options in ``base_options``), and surprise only adds its objective
to that strategy's loss — e.g. the seed's CMS + surprise is
``{name: surprise, options: {base: cms, base_options: {form: adapter}}}``.

How the gradient is computed, exactly in every mode:

* ``detached`` with one layer (the default): in one backward pass. The gradient that reaches ``y_ℓ``
  during the ordinary backward of ``L`` *is* ``∇_{y_ℓ}L`` — nothing after ℓ depends on the auxiliary
  term — so a tensor hook on ``y_ℓ`` adds ``2λ(y_ℓ − ∇_{y_ℓ}L)/N`` right there. No second pass, no
  second-order graph.
* ``detached`` with several layers: a shallower layer's incoming gradient also carries the deeper
  layers' auxiliary terms, so the signals come from one extra first-order pass from ``L`` down to the
  shallowest selected layer (``torch.autograd.grad``), then one ordinary backward.
* ``full``: the signals are computed with ``create_graph=True`` and the backward is second order
  (attention runs on PyTorch's math kernel then: the fused kernels have no double backward).

The default — one layer, the last block — is what keeps the cost within 1.3× of plain SFT: the single
hooked pass costs about what SFT costs (measured by ``clbench.bench.training_speed``: 0.95–1.04× on the default
model), while the extra pass of several layers costs a partial backward (two layers: 1.23×). λ = 0.1 is
seed 003's weight for its medium level.

The logged ``loss`` is always the main loss; each layer's auxiliary term is logged as
``surprise_aux_l<ℓ>`` and summarised in the diagnostics. A layer whose output depends on no parameter
updated at this step (an inactive shallow tier) gets no term in ``detached`` mode: its gradient would
reach no update.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from clbench.config.options import from_dict, opt
from clbench.errors import ConfigError
from clbench.train import registry
from clbench.train.registry import register
from clbench.train.strategy import LossOutput, Strategy
from clbench.train.surprise import aux_grad, aux_loss, surprise_objective
from clbench.train.tiers.updater import decoder_blocks


@dataclass(frozen=True)
class SurpriseOptions:
    base: str = opt("sft", "registered strategy that prepares the model and applies updates (sft, layer_tiers, cms, ...)")
    base_options: dict = opt({}, "options of the base strategy")  # noqa: RUF009 (opt makes a default_factory)
    layers: tuple[int, ...] = opt([-1], "transformer blocks whose output gets the objective (negative: from the end)")
    weights: tuple[float, ...] = opt([0.1], "λ per layer, or one value for all")
    target: Literal["detached", "full"] = opt("detached", "detached: stop-gradient signal, first order; "
                                                          "full: gradients through the signal (second order)")
    every_n: int = opt(1, "add the objective at task steps that are multiples of every_n")
    enabled: bool = opt(True, "false: the base strategy alone")


class SurpriseHooks:
    """Surprise on every backend, free of array code (mixed in before the backend's strategy base class;
    the MLX twin is ``clbench.backends.mlx.strategies.surprise``): the base strategy prepares the model,
    picks the data and applies the updates; surprise resolves the chosen blocks and keeps its terms'
    logs per layer. A backend gives :meth:`base_class`, ``prepare_model`` (the blocks) and ``loss``."""

    def __init__(self, options=None, *, seed: int = 0, train=None):
        super().__init__(options, seed=seed, train=train)
        o = self.options
        base_cls = self.base_class(o.base, "surprise.options.base")
        self.base = base_cls(base_cls.options_from(o.base_options, "surprise.options.base_options"),
                             seed=seed, train=self.train)
        self.weights = list(o.weights) * (len(o.layers) if len(o.weights) == 1 else 1)
        self.layer_index: list[int] = []  # absolute block indices, known after prepare_model
        self.blocks: list = []  # the chosen blocks, in the order of options.layers
        self.objective_on = False  # whether this step adds the objective (enabled, every_n)
        self.step_aux: dict[int, float] = {}  # block index -> this step's auxiliary term
        self.task_aux: dict[int, list[float]] = {}  # block index -> its terms over the task's steps

    @staticmethod
    def base_class(name: str, where: str) -> type:
        raise NotImplementedError

    def choose_blocks(self, blocks: list) -> None:
        """Resolve ``options.layers`` (negative: from the end) against the model's blocks."""
        for layer in self.options.layers:
            if not -len(blocks) <= layer < len(blocks):
                raise ConfigError("surprise.options.layers", f"block {layer} does not exist: the model has "
                                  f"{len(blocks)} blocks (0..{len(blocks) - 1}, or -1..-{len(blocks)})")
        self.layer_index = [layer % len(blocks) for layer in self.options.layers]
        self.blocks = [blocks[i] for i in self.layer_index]

    # --- the base strategy does the model, the data and the updates ---------------------------------
    def mark_trainable(self, model):
        self.base.mark_trainable(model)
        self.trainable = self.base.trainable

    def observe_pretrained(self, task):
        self.base.observe_pretrained(task)

    def training_examples(self, task):
        return self.base.training_examples(task)

    def before_task(self, task, model):
        self.base.before_task(task, model)
        self.task_aux = {layer: [] for layer in self.layer_index}

    def before_step(self, step):
        self.base.before_step(step)
        self.objective_on = self.options.enabled and step % self.options.every_n == 0
        self.step_aux = {}

    def apply_update(self, ctx):
        updated = self.base.apply_update(ctx)
        self.record_step_aux()
        return updated

    def record_step_aux(self) -> None:
        """Add this step's terms (``step_aux``) to the task's log."""
        for layer, value in self.step_aux.items():
            self.task_aux[layer].append(value)

    def after_task(self, task, model):
        self.base.after_task(task, model)

    # --- logs, diagnostics, persistence -------------------------------------------------------------
    def step_log(self):
        return {**self.base.step_log(), **{f"surprise_aux_l{layer}": v for layer, v in self.step_aux.items()}}

    def diagnostics(self):
        per_layer = {str(layer): {"weight": self.weights[i], "steps": len(self.task_aux.get(layer, [])),
                                  "aux_mean": (sum(v) / len(v)) if (v := self.task_aux.get(layer)) else None,
                                  "aux_last": v[-1] if v else None}
                     for i, layer in enumerate(self.layer_index)}
        return {**self.base.diagnostics(),
                "surprise": {"target": self.options.target, "every_n": self.options.every_n,
                             "enabled": self.options.enabled, "layers": per_layer}}

    def checkpoint_metadata(self):
        return {**self.base.checkpoint_metadata(),
                "surprise": {"base": self.options.base, "layers": self.layer_index, "weights": self.weights,
                             "target": self.options.target}}

    def checkpoint_tensors(self, model):
        return self.base.checkpoint_tensors(model)

    def load_checkpoint_tensors(self, model, tensors):
        self.base.load_checkpoint_tensors(model, tensors)

    def state_dict(self):
        return {"base": self.base.state_dict()}

    def load_state_dict(self, state):
        self.base.load_state_dict(state.get("base", {}))


@register("surprise")
class Surprise(SurpriseHooks, Strategy):
    """Surprise objectives: chosen blocks predict ∇_y L of their output, on top of a base strategy."""

    Options = SurpriseOptions

    @classmethod
    def options_from(cls, data, where):
        options = from_dict(cls.Options, data, where)
        base_cls = cls.base_class(options.base, f"{where}.base")
        base_cls.options_from(options.base_options, f"{where}.base_options")
        if not options.layers or len(set(options.layers)) != len(options.layers):
            raise ConfigError(f"{where}.layers", f"need one or more distinct block indices, got {list(options.layers)}")
        if len(options.weights) not in (1, len(options.layers)):
            raise ConfigError(f"{where}.weights", f"give one λ or one per layer ({len(options.layers)}), "
                              f"got {len(options.weights)}")
        if options.every_n < 1:
            raise ConfigError(f"{where}.every_n", f"must be at least 1, got {options.every_n}")
        return options

    @staticmethod
    def base_class(name: str, where: str) -> type[Strategy]:
        names = [n for n in registry.names() if n != "surprise" and registry.get(n).trains]
        if name not in names:
            raise ConfigError(where, f"cannot build surprise on {name!r}", names)
        return registry.get(name)

    def prepare_model(self, model):
        model = self.base.prepare_model(model)
        self.choose_blocks(decoder_blocks(model))
        return model

    def param_groups(self, model):
        return self.base.param_groups(model)

    # --- the surprise objective ---------------------------------------------------------------------
    def loss(self, model, batch):
        if not self.objective_on:
            return self.base.loss(model, batch)
        hidden: dict[int, torch.Tensor] = {}
        handles = [block.register_forward_hook(self._capture(i, hidden)) for i, block in enumerate(self.blocks)]
        try:
            if self.options.target == "full":
                # fused attention kernels (flash / memory-efficient, CPU and CUDA) have no double
                # backward; the math kernel is plain differentiable ops
                with sdpa_kernel([SDPBackend.MATH]):
                    out = self.base.loss(model, batch)
            else:
                out = self.base.loss(model, batch)
        finally:
            for h in handles:
                h.remove()
        if not out.loss.requires_grad or out.loss.grad_fn is None:
            return out  # nothing is updated at this step
        chosen = [i for i in range(len(self.blocks)) if i in hidden and hidden[i].requires_grad]
        if not chosen:
            return out
        k = self.train.grad_accum  # the trainer backpropagates out.loss / grad_accum
        if self.options.target == "detached" and len(chosen) == 1:
            i = chosen[0]  # the deepest layer with a term: its incoming gradient is exactly ∇_y L / k
            hidden[i].register_hook(self._add_aux_grad(i, hidden[i].detach(), k))
            return out
        total, terms = surprise_objective(out.loss, [hidden[i] for i in chosen],
                                          [self.weights[i] for i in chosen], self.options.target)
        for i, term in zip(chosen, terms):
            self._log(i, float(term.detach()) / k)
        # the value of the main loss (what the trainer logs), the gradient of the whole objective
        return LossOutput(out.loss.detach() + (total - total.detach()), out.logs)

    def _capture(self, i: int, hidden: dict):
        full = self.options.target == "full"

        def hook(module, args, output):
            if not torch.is_grad_enabled():
                return  # e.g. a teacher's forward pass inside the base strategy's loss
            if i in hidden:
                raise RuntimeError(f"surprise: block {self.layer_index[i]} ran twice with gradients in one loss of "
                                   f"base strategy {self.options.base!r}; its output y is ambiguous")
            y = output[0] if isinstance(output, tuple) else output
            if full and not y.requires_grad:
                y.requires_grad_()  # nothing below trains now, but ∇_y L still depends on what follows
            hidden[i] = y

        return hook

    def _add_aux_grad(self, i: int, y: torch.Tensor, k: int):
        weight = self.weights[i]

        def hook(grad):
            signal = grad * k  # ∇_y L
            self._log(i, float(aux_loss(y, signal, weight)) / k)
            return grad + aux_grad(y, signal, weight) / k

        return hook

    def _log(self, i: int, value: float) -> None:
        layer = self.layer_index[i]
        self.step_aux[layer] = self.step_aux.get(layer, 0.0) + value
