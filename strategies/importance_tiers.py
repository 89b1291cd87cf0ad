"""Nested-learning tiers by gradient importance (seed 000, "Strategy 2: Parameter Importance").

A warm-up phase of ``warmup_steps`` task steps (default 20: a tenth of the default 200-step task, as
the seed's 100 of 1000) updates every parameter and measures each unit's gradient (below); the units
are then ranked, largest first, and split into near-equal tiers — the largest gradients form tier 0,
the fastest ("high-gradient params are most affected by new data → let them adapt fast"). After the
warm-up the tier schedule of ``clbench.train.tiers.schedule`` applies, counting task steps as every
tiered strategy does (with warm-up 20 and frequencies [1, 2, 4], step 21 updates tier 0, step 24 all
tiers).

**What is ranked, and by what** (``score``, default ``delta_w``). The seed ranks "each parameter"; here
the unit is one *adapted weight matrix* (the ``q_proj`` of layer 3, say), because that is what one
LoRA adapter changes: its effective update ΔW = scale·B·A. The score is the gradient of the loss with
respect to that update, ‖∂L/∂ΔW‖, normalised per element — the root mean square of ∂L/∂ΔW over the
matrix's elements and the warm-up steps, ``sqrt(Σ_steps ‖∂L/∂ΔW‖²_F / (steps · out · in))`` — so a
large matrix does not win by being large. Since W_eff = W + ΔW, ∂L/∂ΔW is the gradient the frozen base
weight would get; it is read from autograd by letting the adapted base weights require a gradient
during the warm-up only (they never reach the optimizer; their gradient is read and dropped every
step — warm-up steps cost about a full fine-tuning backward pass, and with ``lora.dropout`` > 0 the
base weight sees the undropped input). The score does not depend on how LoRA factorises ΔW:
(B·M)(M⁻¹·A) is the same ΔW and the same score, which no score built from A's and B's own gradients
has — those are ∂L/∂B = scale·G·Aᵀ and ∂L/∂A = scale·Bᵀ·G, so their sizes follow the shapes and
scales of A and B (B starts at zero, so A's gradient is exactly zero at the first step), and on a
randomly initialised tiny Llama they sorted the units by module type. In full mode (no LoRA) the unit
is each trained tensor and ∂L/∂ΔW is its own gradient.

On MLX only ``score: lora_abs`` runs (``delta_w`` with LoRA needs the frozen base weights'
gradients, which the MLX backend does not compute; the plan refuses it before training).

``score: lora_abs`` keeps the earlier score for comparison: the mean |g| over the elements of a unit's
LoRA tensors, with ``unit`` (``adapter``: A and B of a layer together; ``tensor``: every tensor alone,
the seed's literal reading). ``unit: tensor`` needs ``lora_abs`` (ΔW belongs to the pair).

``rerank_each_task`` (default true): each task warms up and ranks afresh, because importance is a
property of the data being learned — the seed measures "how much the new data moves a parameter".
With false, the first task's ranking is kept and later tasks are tiered from their first step (the
ranking is saved with the strategy state, so a resumed run keeps it too).

If a task is shorter than the warm-up, the ranking is made at its end from the steps seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from clbench.config.options import opt
from clbench.errors import ConfigError
from clbench.train.registry import register
from clbench.train.tiers.schedule import adapter_unit, tiers_by_score
from clbench.train.tiers.updater import TieredStrategy, TierOptions


@dataclass(frozen=True)
class ImportanceTierOptions(TierOptions):
    warmup_steps: int = opt(20, "task steps that update everything while mean |grad| is measured (>= 1)")
    rerank_each_task: bool = opt(True, "warm up and rank again at every task (false: keep the first ranking)")
    score: Literal["delta_w", "lora_abs"] = opt("delta_w", "delta_w: RMS of dL/dΔW per adapted weight (ΔW = scale·B·A); "
                                                            "lora_abs: the earlier mean |g| over LoRA's A and B")
    unit: Literal["adapter", "tensor"] = opt("adapter", "lora_abs only: rank LoRA A+B of a layer together, or every "
                                                        "tensor alone")


@register("importance_tiers")
class ImportanceTiers(TieredStrategy):
    """Nested learning: weights tiered by ‖∂L/∂ΔW‖ per element measured in a warm-up (largest → fastest)."""

    family = "nested learning"

    Options = ImportanceTierOptions

    def __init__(self, options=None, **kw):
        super().__init__(options, **kw)
        self.scores: dict[str, float] = {}  # unit -> score of the last ranking
        self.ranked_at: list[int] = []  # task indices at which a ranking was made
        self.warming = False  # whether this task is still in its warm-up
        self.abs_sums: dict = {}  # lora_abs: tensor -> summed |grad|; delta_w: unit -> summed ‖∂L/∂ΔW‖²
        self.delta_w: dict = {}  # delta_w, during a warm-up: unit -> the tensor whose gradient is ∂L/∂ΔW
        self.unit_sizes: dict[str, int] = {}  # delta_w: unit -> elements of its ΔW
        self.seen = 0  # warm-up steps summed

    @classmethod
    def options_from(cls, data, where):
        options = super().options_from(data, where)
        if options.warmup_steps < 1:
            raise ConfigError(f"{where}.warmup_steps", f"must be at least 1, got {options.warmup_steps}")
        if options.score == "delta_w" and options.unit == "tensor":
            raise ConfigError(f"{where}.unit", "unit: tensor ranks LoRA's A and B apart, which only score: lora_abs "
                              "can do (ΔW = scale·B·A belongs to the pair)", ["adapter"])
        return options

    @classmethod
    def supported_backends(cls, options):
        if options.score == "delta_w":
            return ("torch",)  # the base weights' gradients: clbench.backends.torch_backend.effective_update_weights
        return super().supported_backends(options)

    @classmethod
    def options_for_backend(cls, backend):
        return {"score": "lora_abs"} if backend in cls.backends else {}

    def add_delta_w_grads(self) -> None:
        """Add this step's ‖∂L/∂ΔW‖²_F of every unit to ``abs_sums`` (raw, before clipping)."""
        for u, sq in self.backend.effective_update_sq_norms(self.delta_w, self.trainable).items():
            self.abs_sums[u] = self.abs_sums[u] + sq if u in self.abs_sums else sq

    def add_abs_grads(self, ctx) -> None:
        """Add this step's raw gradients' summed |g| (before clipping) to ``abs_sums``."""
        for n, g in ctx.grads.items():
            s = self.backend.abs_sum(g)
            self.abs_sums[n] = self.abs_sums[n] + s if n in self.abs_sums else s
        self.backend.materialize(list(self.abs_sums.values()))

    def initial_tier_map(self, model):
        return None  # known only after the first warm-up

    def unit(self, name: str) -> str:
        if self.options.score == "delta_w" or self.options.unit == "adapter":
            return adapter_unit(name)
        return name

    def before_task(self, task, model):
        super().before_task(task, model)
        self.task_index = task.index
        self.warming = self.options.rerank_each_task or self.updater.tier_map is None
        self.abs_sums = {}
        self.seen = 0
        if self.warming and self.options.score == "delta_w":
            units = {self.unit(n): n for n in self.trainable}
            self.delta_w = self.backend.effective_update_weights(model, self.trainable, units)
            self.unit_sizes = {u: int(w.numel()) for u, w in self.delta_w.items()}

    def before_step(self, step):
        self.updater.before_step(step, all_active=self.warming)

    def apply_update(self, ctx):
        if self.warming:
            self.add_delta_w_grads() if self.options.score == "delta_w" else self.add_abs_grads(ctx)
            self.seen += 1
        updated = super().apply_update(ctx)
        if self.warming and ctx.step >= self.options.warmup_steps:
            self.rank()
        return updated

    def after_task(self, task, model):
        if self.warming and self.seen:
            self.rank()
        super().after_task(task, model)

    def rank(self) -> None:
        """Score per unit (module docstring) → tiers, largest first."""
        if self.options.score == "delta_w":
            self.backend.release_effective_update_weights(self.delta_w, self.trainable)
            self.delta_w = {}
            self.scores = {u: math.sqrt(float(self.abs_sums.get(u, 0.0)) / (self.unit_sizes[u] * self.seen))
                           for u in dict.fromkeys(self.unit(n) for n in self.trainable)}
        else:
            total: dict[str, float] = {}
            count: dict[str, int] = {}
            for n, p in self.trainable.items():
                u = self.unit(n)
                total[u] = total.get(u, 0.0) + float(self.abs_sums.get(n, 0.0))
                count[u] = count.get(u, 0) + math.prod(p.shape) * self.seen
            self.scores = {u: total[u] / count[u] for u in total}
        unit_tier = tiers_by_score(self.scores, self.updater.n_tiers)
        self.updater.set_map({n: unit_tier[self.unit(n)] for n in self.trainable})
        self.ranked_at.append(self.task_index)
        self.warming = False

    def diagnostics(self):
        return {**super().diagnostics(),
                "importance": {"warmup_steps": self.options.warmup_steps, "score": self.options.score,
                               "ranked_at_tasks": list(self.ranked_at),
                               "scores": {u: round(s, 10) for u, s in self.scores.items()}}}

    def state_dict(self):
        return {**super().state_dict(), "scores": dict(self.scores), "ranked_at": list(self.ranked_at)}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.scores = dict(state.get("scores", {}))
        self.ranked_at = list(state.get("ranked_at", []))
