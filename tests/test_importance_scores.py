"""importance_tiers' two scores on a hand-computed example: three LoRA-shaped units (q, k, v), two warm-up
steps of hand-made gradients, and the tier map each score gives, computed by hand below.

The numbers are chosen so the two scores rank the units differently and neither ranking is the other
reversed: swapping the scores, or ranking smallest first, gives another map.

Each unit is a 2×2 base weight (frozen) with LoRA factors A (1×2) and B (2×1), 4 LoRA elements per unit.
``delta_w`` reads ∂L/∂ΔW off the base weight's gradient (set by hand here, as autograd would);
``lora_abs`` reads the gradients handed to the strategy (A's and B's).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from clbench.backends.torch_backend import TorchBackend
from clbench.config.experiment import TrainConfig
from clbench.train import registry
from clbench.train.tiers.importance import SCORES, DeltaWScore, LoraAbsScore
from tests.nested_helpers import apply_grads, begin

UNITS = ("q", "k", "v")


class Adapted(nn.Module):
    """A frozen base weight with peft's LoRA layout: ``base_layer``, ``lora_A.default``, ``lora_B.default``."""

    def __init__(self):
        super().__init__()
        self.base_layer = nn.Linear(2, 2, bias=False).requires_grad_(False)
        self.lora_A = nn.ModuleDict({"default": nn.Linear(2, 1, bias=False)})
        self.lora_B = nn.ModuleDict({"default": nn.Linear(1, 2, bias=False)})


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = Adapted(), Adapted(), Adapted()


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def a(u):
    return f"{u}.lora_A.default.weight"


def b(u):
    return f"{u}.lora_B.default.weight"


# LoRA's gradients per step: Σ|g| q: 2+0 + 2+2 = 6, k: 0+1 + 0+0 = 1, v: 1+4 + 0+0 = 5
LORA_GRADS = [
    {a("q"): t([[1, -1]]), b("q"): t([[0], [0]]), a("k"): t([[0, 0]]), b("k"): t([[1], [0]]),
     a("v"): t([[0.5, 0.5]]), b("v"): t([[-2], [2]])},
    {a("q"): t([[1, 1]]), b("q"): t([[2], [0]]), a("k"): t([[0, 0]]), b("k"): t([[0], [0]]),
     a("v"): t([[0, 0]]), b("v"): t([[0], [0]])},
]
# ∂L/∂ΔW per step: Σg² q: 1 + 4 = 5, k: 9 + 0 = 9, v: 4 + 8 = 12
DELTA_W_GRADS = [
    {"q": t([[1, 0], [0, 0]]), "k": t([[0, 0], [0, 3]]), "v": t([[2, 0], [0, 0]])},
    {"q": t([[1, 1], [1, 1]]), "k": t([[0, 0], [0, 0]]), "v": t([[0, 2], [2, 0]])},
]
# mean |g| over 4 LoRA elements × 2 steps
LORA_ABS = {"q": 6 / 8, "k": 1 / 8, "v": 5 / 8}
# RMS over 4 elements of ΔW × 2 steps
DELTA_W = {"q": math.sqrt(5 / 8), "k": math.sqrt(9 / 8), "v": math.sqrt(12 / 8)}


def warmed_up(score: str, unit: str = "adapter"):
    """importance_tiers (3 tiers, warm-up 2) after the two hand-made warm-up steps on :class:`Tiny`."""
    cls = registry.get("importance_tiers")
    s = cls(cls.options_from({"warmup_steps": 2, "score": score, "unit": unit}, "importance_tiers"), seed=0,
            train=TrainConfig(), backend=TorchBackend())
    model = Tiny()
    s.model = model
    s.mark_trainable(model)
    assert sorted(s.trainable) == sorted([a(u) for u in UNITS] + [b(u) for u in UNITS])
    begin(s, model)
    opt = torch.optim.SGD(s.backend.param_groups(s, 0.1), lr=0.1)
    for step, (lora, delta_w) in enumerate(zip(LORA_GRADS, DELTA_W_GRADS, strict=True), start=1):
        for u in UNITS:  # what autograd leaves on a base weight that requires a gradient (delta_w's warm-up)
            weight = model.get_submodule(u).base_layer.weight
            weight.grad = delta_w[u].clone() if weight.requires_grad else None
        assert s.updater.tier_map is None
        apply_grads(s, model, opt, step, {n: g.clone() for n, g in lora.items()})
    return s


def test_delta_w_ranks_units_by_the_rms_of_dl_d_delta_w():
    s = warmed_up("delta_w")
    assert s.scores == pytest.approx(DELTA_W, rel=1e-6)
    # v (1.22) > k (1.06) > q (0.79): v fastest, q slowest; A and B of a unit share its tier
    tier = {"v": 0, "k": 1, "q": 2}
    assert s.updater.tier_map == {n: tier[n.split(".")[0]] for n in s.trainable}
    # the base weights were switched on for the warm-up only
    assert not any(s.model.get_submodule(u).base_layer.weight.requires_grad for u in UNITS)


def test_lora_abs_ranks_units_by_mean_abs_lora_gradient():
    s = warmed_up("lora_abs")
    assert s.scores == pytest.approx(LORA_ABS, rel=1e-6)
    # q (0.75) > v (0.625) > k (0.125)
    tier = {"q": 0, "v": 1, "k": 2}
    assert s.updater.tier_map == {n: tier[n.split(".")[0]] for n in s.trainable}


def test_lora_abs_per_tensor_ranks_a_and_b_apart():
    s = warmed_up("lora_abs", unit="tensor")
    # mean |g| over each tensor's 2 elements × 2 steps
    want = {a("q"): 4 / 4, b("q"): 2 / 4, a("k"): 0 / 4, b("k"): 1 / 4, a("v"): 1 / 4, b("v"): 4 / 4}
    assert s.scores == pytest.approx(want, rel=1e-6)
    # 1.0, 1.0 (tie: by name, q.A first), 0.5, 0.25, 0.25 (k.B before v.A), 0 → two per tier
    assert s.updater.tier_map == {a("q"): 0, b("v"): 0, b("q"): 1, b("k"): 1, a("v"): 2, a("k"): 2}


def test_the_scores_are_chosen_by_the_score_option():
    assert SCORES == {"delta_w": DeltaWScore, "lora_abs": LoraAbsScore}
    with pytest.raises(ValueError, match="ranks adapters"):
        DeltaWScore(TorchBackend(), {}, unit="tensor")
