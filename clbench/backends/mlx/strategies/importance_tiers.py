"""Importance tiers on MLX: a warm-up ranks tensors (or LoRA adapters) by mean |gradient|, largest fastest.

The algorithm and options are torch ``strategies/importance_tiers.py``'s (read its docstring): during the
first ``warmup_steps`` task steps every tensor updates while the raw gradient's mean |g| is summed; the
ranking (``clbench.tiers.tiers_by_score``) is made after the update of step ``warmup_steps`` (or at the
end of a shorter task); ``rerank_each_task`` redoes it per task; ``unit: adapter`` ranks a layer's
``lora_a`` and ``lora_b`` together (mlx-lm names: ``<module>.lora_a`` / ``<module>.lora_b``).
"""

from __future__ import annotations

import re

import mlx.core as mx

from clbench.backends.mlx.tiered import TieredStrategy
from clbench.tiers import tiers_by_score
from strategies.importance_tiers import ImportanceTierOptions

MLX_LORA_PART = re.compile(r"\.lora_[ab]$")


def adapter_unit(name: str) -> str:
    """mlx-lm's LoRA tensors ``...q_proj.lora_a`` and ``...q_proj.lora_b`` are one unit ``...q_proj``
    (``clbench.tiers.adapter_unit`` does the same for peft's names)."""
    return MLX_LORA_PART.sub("", name)


class ImportanceTiers(TieredStrategy):
    """Nested learning: parameters tiered by mean |gradient| measured in a warm-up (largest → fastest)."""

    Options = ImportanceTierOptions

    def __init__(self, options=None, *, seed: int = 0, train=None):
        super().__init__(options, seed=seed, train=train)
        self.scores: dict[str, float] = {}
        self.ranked_at: list[int] = []
        self._warming = False

    def initial_tier_map(self, model):
        return None  # known only after the first warm-up

    def _unit(self, name: str) -> str:
        return adapter_unit(name) if self.options.unit == "adapter" else name

    def before_task(self, task, model):
        super().before_task(task, model)
        self._task = task.index
        self._warming = self.options.rerank_each_task or self.updater.tier_map is None
        self._abs_sum: dict[str, mx.array] = {}
        self._seen = 0

    def before_step(self, step):
        self.updater.before_step(step, all_active=self._warming)

    def grad_names(self, step):
        return None if self._warming else super().grad_names(step)

    def apply_update(self, ctx):
        if self._warming:
            for n, g in ctx.grads.items():  # the raw gradient, before clipping
                s = mx.sum(mx.abs(g.astype(mx.float32)))
                self._abs_sum[n] = self._abs_sum[n] + s if n in self._abs_sum else s
            mx.eval(list(self._abs_sum.values()))
            self._seen += 1
        updated = super().apply_update(ctx)
        if self._warming and ctx.step >= self.options.warmup_steps:
            self._rank()
        return updated

    def after_task(self, task, model):
        if self._warming and self._seen:
            self._rank()
        super().after_task(task, model)

    def _rank(self) -> None:
        """Mean |grad| per unit (over its elements and the warm-up steps) → tiers, largest first."""
        total: dict[str, float] = {}
        count: dict[str, int] = {}
        for n, v in self.trainable.items():
            u = self._unit(n)
            total[u] = total.get(u, 0.0) + float(self._abs_sum.get(n, 0.0))
            count[u] = count.get(u, 0) + int(v.size) * self._seen
        self.scores = {u: total[u] / count[u] for u in total}
        unit_tier = tiers_by_score(self.scores, self.updater.n_tiers)
        self.updater.set_map({n: unit_tier[self._unit(n)] for n in self.trainable})
        self.ranked_at.append(self._task)
        self._warming = False

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
