"""The importance scores' arithmetic on torch tensors (``clbench.train.tiers.importance``; the MLX twin is
``importance_mlx``)."""

from __future__ import annotations

from collections.abc import Mapping

import torch


def abs_sum(g: torch.Tensor) -> torch.Tensor:
    """``Σ|g|`` in float32, as a tensor (summed across steps by the caller)."""
    return g.abs().sum().float()


def effective_update_weights(model, trainable: Mapping[str, torch.Tensor], units: Mapping[str, str]) -> dict:
    """``{unit: tensor whose gradient is ∂L/∂ΔW}`` for the ``delta_w`` score, with that gradient switched on
    from the next step (``units``: unit → one of its trainable names).

    A LoRA unit's ΔW adds to its frozen base weight (W_eff = W + ΔW), so ∂L/∂ΔW is that weight's gradient:
    ``requires_grad`` on for it (it is not in the optimizer, and its gradient is read and dropped every
    step); a trained tensor that is no LoRA factor (full mode) is its own ΔW."""
    weights = {}
    for unit, name in units.items():
        if unit == name:
            weights[unit] = trainable[name]
            continue
        base = getattr(model.get_submodule(unit), "base_layer", None)
        if base is None or not isinstance(getattr(base, "weight", None), torch.Tensor):
            raise ValueError(f"{unit}: a LoRA adapter without base_layer.weight; use importance score lora_abs")
        base.weight.requires_grad_(True)
        weights[unit] = base.weight
    return weights


def effective_update_sq_norms(weights: Mapping[str, torch.Tensor], trainable: Mapping[str, torch.Tensor]) -> dict:
    """``{unit: ‖∂L/∂ΔW‖²_F}`` of this step for :func:`effective_update_weights`' tensors."""
    out = {}
    with torch.no_grad():
        for unit, w in weights.items():
            if w.grad is not None:
                out[unit] = w.grad.float().pow(2).sum()
                if unit not in trainable:
                    w.grad = None  # a base weight's: read once, never applied
    return out


def release_effective_update_weights(weights: Mapping[str, torch.Tensor],
                                     trainable: Mapping[str, torch.Tensor]) -> None:
    """Undo :func:`effective_update_weights` (the warm-up is over)."""
    for unit, w in weights.items():
        if unit not in trainable:
            w.requires_grad_(False)
            w.grad = None
