"""Nested-learning tiers by gradient importance (seed 000, "Strategy 2: Parameter Importance").

A warm-up phase of ``warmup_steps`` task steps (default 20: a tenth of the default 200-step task, as
the seed's 100 of 1000) updates every parameter and tracks the mean |gradient|
of each unit (below); the units are then ranked, largest first, and split into near-equal tiers —
the largest gradients form tier 0, the fastest ("high-gradient params are most affected by new data →
let them adapt fast"). After the warm-up the tier schedule of ``clbench.train.tiers.schedule`` applies, counting task
steps as every tiered strategy does (with warm-up 20 and frequencies [1, 2, 4], step 21 updates tier 0,
step 24 all tiers).

``rerank_each_task`` (default true): each task warms up and ranks afresh, because importance is a
property of the data being learned — the seed measures "how much the new data moves a parameter".
With false, the first task's ranking is kept and later tasks are tiered from their first step (the
ranking is saved with the strategy state, so a resumed run keeps it too).

``unit`` (default ``adapter``): what is ranked. With LoRA, ``lora_A`` and ``lora_B`` of one layer are one
weight change ΔW = B·A, and their gradients are not comparable — B starts at zero, so A's gradient is
exactly zero at the first step — ranking tensors would put every B in the fast tier and every A in the
slow one, a fact about LoRA's parametrisation rather than about importance. ``adapter`` ranks each
adapted layer by the mean |gradient| over both of its tensors; ``tensor`` ranks every tensor alone (the
seed's literal reading). In full mode both are per tensor.

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
    unit: Literal["adapter", "tensor"] = opt("adapter", "rank LoRA A+B of a layer together, or every tensor alone")


@register("importance_tiers")
class ImportanceTiers(TieredStrategy):
    """Nested learning: parameters tiered by mean |gradient| measured in a warm-up (largest → fastest)."""

    Options = ImportanceTierOptions

    def __init__(self, options=None, **kw):
        super().__init__(options, **kw)
        self.scores: dict[str, float] = {}  # unit -> mean |grad| of the last ranking
        self.ranked_at: list[int] = []  # task indices at which a ranking was made
        self.warming = False  # whether this task is still in its warm-up
        self.abs_sums: dict = {}  # tensor -> summed |grad| over the warm-up steps (a backend scalar)
        self.seen = 0  # warm-up steps summed

    @classmethod
    def options_from(cls, data, where):
        options = super().options_from(data, where)
        if options.warmup_steps < 1:
            raise ConfigError(f"{where}.warmup_steps", f"must be at least 1, got {options.warmup_steps}")
        return options

    def add_abs_grads(self, ctx) -> None:
        """Add this step's raw gradients' summed |g| (before clipping) to ``abs_sums``."""
        for n, g in ctx.grads.items():
            s = self.backend.abs_sum(g)
            self.abs_sums[n] = self.abs_sums[n] + s if n in self.abs_sums else s
        self.backend.materialize(list(self.abs_sums.values()))

    def initial_tier_map(self, model):
        return None  # known only after the first warm-up

    def unit(self, name: str) -> str:
        return adapter_unit(name) if self.options.unit == "adapter" else name

    def before_task(self, task, model):
        super().before_task(task, model)
        self.task_index = task.index
        self.warming = self.options.rerank_each_task or self.updater.tier_map is None
        self.abs_sums = {}
        self.seen = 0

    def before_step(self, step):
        self.updater.before_step(step, all_active=self.warming)

    def apply_update(self, ctx):
        if self.warming:
            self.add_abs_grads(ctx)
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
        """Mean |grad| per unit (over its elements and the warm-up steps) → tiers, largest first."""
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
                "importance": {"warmup_steps": self.options.warmup_steps, "ranked_at_tasks": list(self.ranked_at),
                               "scores": {u: round(s, 10) for u, s in self.scores.items()}}}

    def state_dict(self):
        return {**super().state_dict(), "scores": dict(self.scores), "ranked_at": list(self.ranked_at)}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.scores = dict(state.get("scores", {}))
        self.ranked_at = list(state.get("ranked_at", []))
