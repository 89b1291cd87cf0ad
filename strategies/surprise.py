"""Surprise-based auxiliary objectives (seed 003): a plugin, added to any strategy by configuration.

Selected transformer blocks ℓ are asked to predict their surprise signal ``∇_{y_ℓ} L`` (the gradient of
the main loss — the base strategy's loss — with respect to the block's output hidden state, captured
with forward hooks): the objective becomes
``L + Σ λ_ℓ mean((y_ℓ − ∇_{y_ℓ}L)²)`` (math in ``clbench.train.surprise``), added at task steps that are
multiples of ``every_n``; ``enabled: false`` turns it off for ablations.

Composition is configuration, not a class: the grid entry names the strategy that prepares the model
and applies the updates, and ``with: [surprise]`` adds this objective to its loss — e.g. the seed's
CMS + surprise is ``{name: cms, options: {form: adapter}, with: [surprise]}``, and the benchmark's
``surprise`` row is ``{name: sft, label: surprise, with: [surprise]}`` (``clbench.train.plugin``).

How the gradient is computed, exactly in every mode (the one backend-specific piece,
``self.backend.surprise``: ``clbench.backends.torch_surprise`` with tensor hooks,
``clbench.backends.mlx.surprise`` with a custom VJP):

* ``detached`` with one layer (the default): in one backward pass. The gradient that reaches ``y_ℓ``
  during the ordinary backward of ``L`` *is* ``∇_{y_ℓ}L`` — nothing after ℓ depends on the auxiliary
  term — so a tensor hook on ``y_ℓ`` adds ``2λ(y_ℓ − ∇_{y_ℓ}L)/N`` right there. No second pass, no
  second-order graph.
* ``detached`` with several layers: a shallower layer's incoming gradient also carries the deeper
  layers' auxiliary terms, so the signals come from one extra first-order pass from ``L`` down to the
  shallowest selected layer (``torch.autograd.grad``), then one ordinary backward.
* ``full``: the signals are computed with ``create_graph=True`` and the backward is second order
  (attention runs on PyTorch's math kernel then: the fused kernels have no double backward).

The default — one layer, the last block — is what keeps the cost near plain SFT's: the single hooked
pass costs about what SFT costs, while the extra pass of several layers costs a partial backward
(``clbench.bench.training_speed`` measures both; docs/findings.md). λ = 0.1 is seed 003's weight for its
medium level.

The logged ``loss`` is always the main loss; each layer's auxiliary term is logged as
``surprise_aux_l<ℓ>``, and (torch) the size of its target next to its activation,
``rms(∇_y L)/rms(y)``, as ``surprise_ratio_l<ℓ>`` — both summarised in the diagnostics. The ratio says
whether the objective is about surprise at all: at 0.002 the target is numerically zero and the term
is the activation penalty ``λ·mean(y²)`` that the control plugin ``activation_l2`` applies on its own.
(The paper's — Titans' — surprise drives a memory's own update instead: ``cms_local``.) A layer whose output depends on no parameter
updated at this step (an inactive shallow tier) gets no term in ``detached`` mode: its gradient would
reach no update.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from clbench.config.options import from_dict, opt
from clbench.errors import ConfigError
from clbench.train.plugin import Plugin
from clbench.train.registry import register_plugin
from clbench.train.types import SurpriseBlocks, SurpriseTerms


@dataclass(frozen=True)
class SurpriseOptions:
    layers: tuple[int, ...] = opt([-1], "transformer blocks whose output gets the objective (negative: from the end)")
    weights: tuple[float, ...] = opt([0.1], "λ per layer, or one value for all")
    target: Literal["detached", "full"] = opt("detached", "detached: stop-gradient signal, first order; "
                                                          "full: gradients through the signal (second order)")
    every_n: int = opt(1, "add the objective at task steps that are multiples of every_n")
    enabled: bool = opt(True, "false: the strategy alone")


@register_plugin("surprise")
class Surprise(Plugin):
    """Surprise objectives: chosen blocks predict ∇_y L of their output, added to any strategy's loss."""

    family = "nested learning"

    Options = SurpriseOptions

    def __init__(self, options=None, **given):
        super().__init__(options, **given)
        o = self.options
        self.weights = list(o.weights) * (len(o.layers) if len(o.weights) == 1 else 1)
        self.layer_index: list[int] = []  # absolute block indices, known after prepare_model
        self.blocks: list = []  # the chosen blocks, in the order of options.layers
        self.objective_on = False  # whether this step adds the objective (enabled, every_n)
        self.step_terms: list[SurpriseTerms] = []  # what the backend returned for each of this step's micro-batches
        self.task_aux: dict[int, list[float]] = {}  # block index -> its terms over the task's steps
        self.task_ratio: dict[int, list[float]] = {}  # block index -> rms(∇_y L) / rms(y) over the task's steps

    @classmethod
    def options_from(cls, data, where):
        options = from_dict(cls.Options, data, where)
        if not options.layers or len(set(options.layers)) != len(options.layers):
            raise ConfigError(f"{where}.layers", f"need one or more distinct block indices, got {list(options.layers)}")
        if len(options.weights) not in (1, len(options.layers)):
            raise ConfigError(f"{where}.weights", f"give one λ or one per layer ({len(options.layers)}), "
                              f"got {len(options.weights)}")
        if options.every_n < 1:
            raise ConfigError(f"{where}.every_n", f"must be at least 1, got {options.every_n}")
        return options

    def choose_blocks(self, blocks: list) -> None:
        """Resolve ``options.layers`` (negative: from the end) against the model's blocks."""
        for layer in self.options.layers:
            if not -len(blocks) <= layer < len(blocks):
                raise ConfigError(f"{self.where}.layers", f"block {layer} does not exist: the model has "
                                  f"{len(blocks)} blocks (0..{len(blocks) - 1}, or -1..-{len(blocks)})")
        self.layer_index = [layer % len(blocks) for layer in self.options.layers]
        self.blocks = [blocks[i] for i in self.layer_index]

    def chosen(self) -> SurpriseBlocks:
        """The chosen blocks as the backend's surprise trick is told them."""
        return SurpriseBlocks(tuple(self.blocks), tuple(self.layer_index), tuple(self.weights), self.options.target)

    def step_values(self) -> tuple[dict[int, float], dict[int, float]]:
        """This step's auxiliary term per block index, averaged over its micro-batches (a micro-batch where
        the block got no gradient counts as 0), and its signal ratio, the largest over them."""
        aux: dict[int, float] = {}
        ratio: dict[int, float] = {}
        for i, layer in enumerate(self.layer_index):
            values = [float(t.aux[i]) for t in self.step_terms if i in t.aux]
            if values:
                aux[layer] = sum(values) / len(self.step_terms)
            ratios = [t.ratio[i] for t in self.step_terms if i in t.ratio]
            if ratios:
                ratio[layer] = max(ratios)
        return aux, ratio

    # --- hooks ----------------------------------------------------------------------------------------
    def prepare_model(self, model):
        self.choose_blocks(self.backend.decoder_blocks(model))
        self.backend.surprise.prepare(self.blocks, model)
        return model

    def before_task(self, task, model):
        self.task_aux = {layer: [] for layer in self.layer_index}
        self.task_ratio = {layer: [] for layer in self.layer_index}

    def before_step(self, step):
        self.objective_on = self.options.enabled and step % self.options.every_n == 0
        self.step_terms = []

    def loss(self, model, batch, inner):
        if not self.objective_on:
            return inner(model, batch)
        out, terms = self.backend.surprise.loss(self.chosen(), model, batch, inner)
        self.step_terms.append(terms)
        return out

    def after_update(self, ctx):
        aux, ratio = self.step_values()
        for layer, value in aux.items():
            self.task_aux[layer].append(value)
        for layer, value in ratio.items():
            self.task_ratio.setdefault(layer, []).append(value)

    # --- logs ------------------------------------------------------------------------------------------
    def step_log(self):
        aux, ratio = self.step_values()
        return {**{f"surprise_aux_l{layer}": v for layer, v in aux.items()},
                **{f"surprise_ratio_l{layer}": v for layer, v in ratio.items()}}

    def diagnostics(self):
        per_layer = {str(layer): {"weight": self.weights[i], "steps": len(self.task_aux.get(layer, [])),
                                  "aux_mean": (sum(v) / len(v)) if (v := self.task_aux.get(layer)) else None,
                                  "aux_last": v[-1] if v else None,
                                  "signal_ratio_mean": (sum(r) / len(r)) if (r := self.task_ratio.get(layer)) else None,
                                  "signal_ratio_max": max(r) if r else None}
                     for i, layer in enumerate(self.layer_index)}
        return {"surprise": {"target": self.options.target, "every_n": self.options.every_n,
                             "enabled": self.options.enabled, "layers": per_layer}}

    def checkpoint_metadata(self):
        return {"surprise": {"layers": self.layer_index, "weights": self.weights,
                             "target": self.options.target}}
