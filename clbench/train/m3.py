"""M3, the Multi-scale Momentum Muon optimizer (Nested Learning, Algorithm 1) as a ``torch.optim.Optimizer``.

Seed 004: "Adam + Muon + CMS = M3" — Muon's orthogonalised momentum, Adam's second-moment division, and
the single momentum replaced by a *fast* momentum updated every step and a *slow* one updated once per
chunk of Ĉ steps (a two-level continuum memory over the gradients). Per 2-D parameter θ with gradient g::

    every step:      M1 ← M1 + β1·g          (fast momentum)
                     V  ← V  + β2·g²         (second moment)
                     S  ← S  + g             (the slow level's chunk sum)
                     O1 = NS_T(M1)
                     θ  ← θ − η·(O1 + α·O2) / (√V + ε)
    every Ĉ steps:   M2 ← M2 + β3·S,  S ← 0,  O2 = NS_T(M2)   (used from the next step on)

**Accumulation, not moving averages.** Algorithm 1 writes every memory as a sum — ``M⁽¹⁾_t = M⁽¹⁾_{t−1}
+ β1 g_t``, ``V_t = V_{t−1} + β2 g_t²``, ``M⁽²⁾ = M⁽²⁾ + β3 Σ_chunk g`` — with no ``(1 − β)`` factor
and no bias correction; the reimplementation kmccleary3301/nested_learning (``optim/m3.py``) does the
same, and so does this one. (The paper presents momentum as an associative memory whose retention
factor is a design choice; Algorithm 1 fixes it at 1.) Consequences a user should know: M1 and V grow
over a task, so the step size ``η·|O1|/√V`` shrinks roughly as 1/√t; the *direction* stays that of
the orthogonalised running sum. ``clbench`` rebuilds the optimizer at every task by default
(``train.reset_optimizer``), which restarts these sums.

**Where the slow momentum is applied.** The outer loop of Algorithm 1 refreshes M⁽²⁾/O⁽²⁾ from the
gradients of the *previous* chunk before the chunk's inner steps, so O⁽²⁾ is zero for the first Ĉ
steps and the refresh at step kĈ is first used at step kĈ + 1 (as in the reimplementation).

**Newton–Schulz.** ``NS_T``: divide by the Frobenius norm (+ε) so every singular value is ≤ 1, then T
iterations ``X ← a·X + (b·A + c·A²)·X`` with ``A = X Xᵀ`` (on the short side). The default
coefficients (1.5, −0.5, 0) are the classical cubic iteration ``X ← ½·X(3I − XᵀX)``, which converges to
the orthogonal polar factor UVᵀ — the reimplementation's choice. ``ns_coefficients="quintic"`` selects
Muon's (3.4445, −4.7750, 2.0315), the coefficients of ``torch.optim.Muon`` (tested to agree with
torch's own iteration). torch's iteration itself is not called: it is private
(``torch.optim._muon._zeropower_via_newtonschulz``) and always computes in bfloat16, which is slow on
CPUs and would make M3's steps irreproducible against a float32/float64 hand computation.

**Parameters without a gradient** (an inactive tier, a CMS level inside its chunk) are skipped
entirely, as torch's Adam skips them: no moment, chunk sum, step count or weight decay changes. The
slow chunk is counted in each parameter's own updates, so a tier that updates every 4th step closes
its slow chunk after Ĉ of *its* updates.

**Other shapes** (biases, norms, embeddings given as 1-D, any tensor that is not 2-D) fall back to
AdamW with betas (β1, β2), ε and weight decay of the group, through torch's own functional
``torch.optim.adamw.adamw`` — bit for bit what ``torch.optim.AdamW`` does. Weight decay on 2-D
parameters is decoupled (θ ← θ·(1 − η·λ) before the step), as AdamW's; Algorithm 1 has none.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim.adamw import adamw

CUBIC = (1.5, -0.5, 0.0)
QUINTIC = (3.4445, -4.7750, 2.0315)  # torch.optim.Muon's defaults (Keller Jordan's Muon)
NS_COEFFICIENTS = {"cubic": CUBIC, "quintic": QUINTIC}


def newton_schulz(matrix: torch.Tensor, steps: int, coefficients=CUBIC, eps: float = 1e-7) -> torch.Tensor:
    """``NS_T(matrix)``: Frobenius-normalise, then ``steps`` iterations ``X ← aX + (bA + cA²)X``, A = XXᵀ.

    Computed in the matrix's dtype on its shorter side (the result is transposed back), as Muon does.
    """
    if matrix.ndim != 2:
        raise ValueError(f"Newton-Schulz needs a 2-D matrix, got shape {tuple(matrix.shape)}")
    a, b, c = coefficients
    tall = matrix.size(0) > matrix.size(1)
    x = matrix.T if tall else matrix
    x = x / (torch.linalg.matrix_norm(x) + eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x.T if tall else x


class M3(torch.optim.Optimizer):
    """Multi-scale Momentum Muon: fast and slow orthogonalised momenta over Adam's accumulated second
    moment for 2-D parameters, AdamW for the rest (module docstring)."""

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float, float] = (0.9, 0.999, 0.9),
                 alpha: float = 1.0, eps: float = 1e-8, ns_steps: int = 3, slow_chunk: int = 100,
                 weight_decay: float = 0.0, ns_coefficients: str = "cubic"):
        if lr < 0 or eps < 0 or weight_decay < 0 or alpha < 0:
            raise ValueError(f"lr, eps, weight_decay and alpha must be >= 0, got {lr}, {eps}, {weight_decay}, {alpha}")
        if len(betas) != 3 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be three values in [0, 1), got {betas}")
        if ns_steps < 0 or slow_chunk < 1:
            raise ValueError(f"ns_steps must be >= 0 and slow_chunk >= 1, got {ns_steps}, {slow_chunk}")
        if ns_coefficients not in NS_COEFFICIENTS:
            raise ValueError(f"ns_coefficients must be one of {sorted(NS_COEFFICIENTS)}, got {ns_coefficients!r}")
        defaults = {"lr": lr, "betas": tuple(betas), "alpha": alpha, "eps": eps, "ns_steps": ns_steps,
                    "slow_chunk": slow_chunk, "weight_decay": weight_decay, "ns_coefficients": ns_coefficients}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            matrices = [p for p in group["params"] if p.grad is not None and p.ndim == 2]
            others = [p for p in group["params"] if p.grad is not None and p.ndim != 2]
            for p in matrices:
                self._m3_step(p, group)
            if others:
                self._adamw_step(others, group)
        return loss

    def _m3_step(self, p: torch.Tensor, group: dict) -> None:
        if p.grad.is_sparse:
            raise RuntimeError("M3 does not support sparse gradients")
        beta1, beta2, beta3 = group["betas"]
        coeffs, steps, eps = NS_COEFFICIENTS[group["ns_coefficients"]], group["ns_steps"], group["eps"]
        g = p.grad
        state = self.state[p]
        if not state:
            state["step"] = 0
            for key in ("m1", "v", "chunk_sum", "m2", "o2"):
                state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        state["m1"].add_(g, alpha=beta1)
        state["v"].addcmul_(g, g, value=beta2)
        state["chunk_sum"].add_(g)
        direction = newton_schulz(state["m1"], steps, coeffs)
        if group["alpha"]:
            direction = direction + group["alpha"] * state["o2"]
        if group["weight_decay"]:
            p.mul_(1.0 - group["lr"] * group["weight_decay"])
        p.addcdiv_(direction, state["v"].sqrt().add_(eps), value=-group["lr"])
        if state["step"] % group["slow_chunk"] == 0:
            state["m2"].add_(state["chunk_sum"], alpha=beta3)
            state["chunk_sum"].zero_()
            state["o2"] = newton_schulz(state["m2"], steps, coeffs)

    def _adamw_step(self, params: list[torch.Tensor], group: dict) -> None:
        """torch's AdamW on ``params`` (state laid out as ``torch.optim.AdamW`` lays it out)."""
        exp_avgs, exp_avg_sqs, steps = [], [], []
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        beta1, beta2, _ = group["betas"]
        adamw(params, [p.grad for p in params], exp_avgs, exp_avg_sqs, [], steps, foreach=None,
              amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"],
              eps=group["eps"], maximize=False)
