"""Importance tiers on MLX: a warm-up ranks tensors (or LoRA adapters) by mean |gradient|, largest fastest.

The algorithm and options are torch ``strategies/importance_tiers.py``'s (read its docstring; its
``ImportanceRanking`` is the code of warm-up and ranking on both backends): during the
first ``warmup_steps`` task steps every tensor updates while the raw gradient's mean |g| is summed; the
ranking (``clbench.train.tiers.schedule.tiers_by_score``) is made after the update of step ``warmup_steps`` (or at the
end of a shorter task); ``rerank_each_task`` redoes it per task; ``unit: adapter`` ranks a layer's
``lora_a`` and ``lora_b`` together (mlx-lm names: ``<module>.lora_a`` / ``<module>.lora_b``).
"""

from __future__ import annotations

import re

import mlx.core as mx

from clbench.backends.mlx.tiered import TieredStrategy
from clbench.strategies.importance_tiers import ImportanceRanking, ImportanceTierOptions

MLX_LORA_PART = re.compile(r"\.lora_[ab]$")


def adapter_unit(name: str) -> str:
    """mlx-lm's LoRA tensors ``...q_proj.lora_a`` and ``...q_proj.lora_b`` are one unit ``...q_proj``
    (``clbench.train.tiers.schedule.adapter_unit`` does the same for peft's names)."""
    return MLX_LORA_PART.sub("", name)


class ImportanceTiers(ImportanceRanking, TieredStrategy):
    """Nested learning: parameters tiered by mean |gradient| measured in a warm-up (largest → fastest)."""

    Options = ImportanceTierOptions
    unit_of = staticmethod(adapter_unit)

    def reset_abs_sums(self):
        return {}

    def add_abs_grads(self, ctx):
        for n, g in ctx.grads.items():  # the raw gradient, before clipping
            s = mx.sum(mx.abs(g.astype(mx.float32)))
            self.abs_sums[n] = self.abs_sums[n] + s if n in self.abs_sums else s
        mx.eval(list(self.abs_sums.values()))

    def grad_names(self, step):
        return None if self.warming else super().grad_names(step)
