"""The two importance scores of ``importance_tiers``, one small class each (the strategy's docstring says
what each measures and why).

A score lives for one warm-up: :meth:`ImportanceScore.start` before its first step,
:meth:`ImportanceScore.add` at every step (the raw gradients, before clipping), then
:meth:`ImportanceScore.scores` — one number per unit, larger meaning more important — which ends it.
:meth:`ImportanceScore.unit` says which unit a trainable tensor is ranked with: its LoRA adapter (A and B
of a layer together: ``unit: adapter``) or the tensor alone (``unit: tensor``, ``lora_abs`` only). The arithmetic on a
backend's arrays is the backend's twin module next to this one (``importance_torch``, ``importance_mlx``),
picked by the backend's name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from clbench.train.tiers.schedule import adapter_unit


def score_arrays(backend_name: str):
    """The importance arithmetic on ``backend_name``'s arrays (its module is imported only for that backend,
    so a torch run never imports MLX)."""
    if backend_name == "mlx":
        from clbench.train.tiers import importance_mlx

        return importance_mlx
    if backend_name == "torch":
        from clbench.train.tiers import importance_torch

        return importance_torch
    raise ValueError(f"no importance score arithmetic for backend {backend_name!r}")


class ImportanceScore:
    """One warm-up's importance measure: summed per step, one number per unit at the end."""

    name: ClassVar[str]

    def __init__(self, backend, trainable: Mapping[str, Any], unit: str = "adapter"):
        self.backend = backend
        self.arrays = score_arrays(backend.name)
        self.trainable = trainable
        self.by_adapter = unit == "adapter"
        self.sums: dict = {}  # what add() sums, as backend scalars
        self.steps = 0  # warm-up steps summed

    def unit(self, name: str) -> str:
        """The unit a trainable tensor is ranked with."""
        return adapter_unit(name) if self.by_adapter else name

    def start(self, model) -> None:
        """Before the warm-up's first step."""

    def add(self, grads: Mapping[str, Any]) -> None:
        """One warm-up step (``grads``: its raw gradients, before clipping)."""
        raise NotImplementedError

    def scores(self) -> dict[str, float]:
        """``{unit: score}`` over the steps added; the warm-up is over."""
        raise NotImplementedError

    def sum_into(self, key: str, value) -> None:
        """``sums[key] += value`` (``value`` a backend scalar; the first one is kept as it is)."""
        self.sums[key] = self.sums[key] + value if key in self.sums else value


class DeltaWScore(ImportanceScore):
    """``delta_w``: the RMS of ∂L/∂ΔW over a unit's elements and the warm-up's steps (units: one adapted
    weight matrix, or in full mode one trained tensor)."""

    name = "delta_w"

    def __init__(self, backend, trainable, unit="adapter"):
        if unit != "adapter":
            raise ValueError("the delta_w score ranks adapters (ΔW = scale·B·A belongs to the pair), not tensors")
        super().__init__(backend, trainable, unit)

    def start(self, model):
        units = {self.unit(n): n for n in self.trainable}
        self.weights = self.arrays.effective_update_weights(model, self.trainable, units)
        self.sizes = {u: int(w.numel()) for u, w in self.weights.items()}  # elements of each ΔW

    def add(self, grads):
        """Adds ‖∂L/∂ΔW‖²_F of every unit, read off :meth:`start`'s weights (``grads`` is not needed)."""
        for u, sq in self.arrays.effective_update_sq_norms(self.weights, self.trainable).items():
            self.sum_into(u, sq)
        self.steps += 1

    def scores(self):
        self.arrays.release_effective_update_weights(self.weights, self.trainable)
        self.weights = {}
        return {u: math.sqrt(float(self.sums.get(u, 0.0)) / (self.sizes[u] * self.steps))
                for u in dict.fromkeys(self.unit(n) for n in self.trainable)}


class LoraAbsScore(ImportanceScore):
    """``lora_abs``: the mean |g| over the elements of a unit's trainable tensors and the warm-up's steps
    (units: LoRA's A and B of a layer together, ``adapter``, or every tensor alone, ``tensor``)."""

    name = "lora_abs"

    def add(self, grads):
        """Adds Σ|g| of every tensor's gradient."""
        for n, g in grads.items():
            self.sum_into(n, self.arrays.abs_sum(g))
        self.backend.materialize(list(self.sums.values()))
        self.steps += 1

    def scores(self):
        total: dict[str, float] = {}
        count: dict[str, int] = {}
        for n, p in self.trainable.items():
            u = self.unit(n)
            total[u] = total.get(u, 0.0) + float(self.sums.get(n, 0.0))
            count[u] = count.get(u, 0) + math.prod(p.shape) * self.steps
        return {u: total[u] / count[u] for u in total}


SCORES: dict[str, type[ImportanceScore]] = {s.name: s for s in (DeltaWScore, LoraAbsScore)}
