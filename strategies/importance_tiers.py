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

from dataclasses import dataclass
from typing import Literal

from clbench.config.options import opt
from clbench.errors import ConfigError
from clbench.train.registry import register
from clbench.train.tiers.importance import SCORES, ImportanceScore
from clbench.train.tiers.schedule import tiers_by_score
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
    """Nested learning: weights tiered by ‖∂L/∂ΔW‖ per element measured in a warm-up (largest → fastest).

    The algorithm: a task's warm-up updates everything while its score (``clbench.train.tiers.importance``)
    sums every step → the score per unit → rank, largest first → tiers → each tier updates on its clock."""

    family = "nested learning"

    Options = ImportanceTierOptions

    def __init__(self, options=None, **kw):
        super().__init__(options, **kw)
        self.scores: dict[str, float] = {}  # unit -> score of the last ranking
        self.ranked_at: list[int] = []  # task indices at which a ranking was made
        self.warmup: ImportanceScore | None = None  # this task's score while it is warming up

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
            return ("torch",)  # the base weights' gradients: clbench.train.tiers.importance_torch
        return super().supported_backends(options)

    @classmethod
    def options_for_backend(cls, backend):
        return {"score": "lora_abs"} if backend in cls.backends else {}

    def initial_tier_map(self, model):
        return None  # known only after the first warm-up

    def before_task(self, task, model):
        super().before_task(task, model)
        self.task_index = task.index
        self.warmup = None
        if self.options.rerank_each_task or self.updater.tier_map is None:
            self.warmup = SCORES[self.options.score](self.backend, self.trainable, self.options.unit)
            self.warmup.start(model)

    def before_step(self, step):
        self.updater.before_step(step, all_active=self.warmup is not None)

    def apply_update(self, ctx):
        if self.warmup is not None:
            self.warmup.add(ctx.grads)
        updated = super().apply_update(ctx)
        if self.warmup is not None and ctx.step >= self.options.warmup_steps:
            self.rank()
        return updated

    def after_task(self, task, model):
        if self.warmup is not None and self.warmup.steps:
            self.rank()
        super().after_task(task, model)

    def rank(self) -> None:
        """The warm-up's score per unit → tiers, largest first (the warm-up ends)."""
        self.scores = self.warmup.scores()
        unit_tier = tiers_by_score(self.scores, self.updater.n_tiers)
        self.updater.set_map({n: unit_tier[self.warmup.unit(n)] for n in self.trainable})
        self.ranked_at.append(self.task_index)
        self.warmup = None

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
