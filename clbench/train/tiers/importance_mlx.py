"""The importance scores' arithmetic on MLX arrays (``clbench.train.tiers.importance``; the torch twin is
``importance_torch``). Only ``lora_abs`` runs on MLX: ``delta_w`` with LoRA needs the frozen base weights'
gradients, which the MLX backend does not compute (``importance_tiers`` refuses it when planning)."""

from __future__ import annotations

import mlx.core as mx


def abs_sum(g: mx.array) -> mx.array:
    """``Σ|g|`` in float32, as an MLX scalar (summed across steps by the caller)."""
    return mx.sum(mx.abs(g.astype(mx.float32)))
