"""Surprise-based auxiliary objectives (seed 003; the paper's eqs. 25–27) as pure functions.

For a layer ℓ with output ``y_ℓ`` and main loss ``L``, the *surprise signal* is ``s_ℓ = ∇_{y_ℓ} L`` —
"the model learns to map a data point to its local error" (seed 004). Each selected layer is asked to
predict it::

    total = L + Σ_ℓ λ_ℓ · mean((y_ℓ − s_ℓ)²)

The squared error is a *mean* over the elements of ``y_ℓ`` (batch × positions × width), so λ does not
change meaning with batch size, sequence length or model width; the tests use the same convention.

Two target modes:

* ``detached`` — ``s_ℓ`` is a stop-gradient target. Only ``∂aux/∂y_ℓ = 2λ(y_ℓ − s_ℓ)/N`` flows back, so
  no second-order graph is needed (the earlier implementation built one with ``create_graph=True`` and
  then threw it away with ``.detach()``);
* ``full`` — gradients also flow through ``s_ℓ`` into everything ``L`` depends on after layer ℓ: true
  second order, a double backward.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

Target = Literal["detached", "full"]


def aux_loss(y: torch.Tensor, target: torch.Tensor, weight: float) -> torch.Tensor:
    """``weight · mean((y − target)²)``."""
    return weight * (y - target).pow(2).mean()


def aux_grad(y: torch.Tensor, target: torch.Tensor, weight: float) -> torch.Tensor:
    """``∂ aux_loss / ∂y`` with the target held constant: ``2·weight·(y − target) / N``."""
    return (2.0 * weight / y.numel()) * (y - target)


def signal_ratio(y: torch.Tensor, signal: torch.Tensor) -> float:
    """``rms(∇_y L) / rms(y)``: how large the target is next to the activation it is compared with. When
    it is tiny, ``mean((y − s)²)`` is ``mean(y²)`` to within about twice this ratio: the objective is an
    activation penalty, whatever its name (measured 0.0019 at the default model's last block)."""
    y_rms = float(y.detach().float().pow(2).mean().sqrt())
    return float(signal.detach().float().pow(2).mean().sqrt()) / y_rms if y_rms else float("inf")


def surprise_signals(loss: torch.Tensor, hidden: Sequence[torch.Tensor],
                     create_graph: bool = False) -> tuple[torch.Tensor, ...]:
    """``∇_{y_ℓ} L`` for every ``y_ℓ`` in ``hidden`` (the graph is kept for the backward of the total)."""
    return torch.autograd.grad(loss, list(hidden), retain_graph=True, create_graph=create_graph)


def surprise_objective(loss: torch.Tensor, hidden: Sequence[torch.Tensor], weights: Sequence[float],
                       target: Target = "detached") -> tuple[torch.Tensor, list[torch.Tensor], tuple[torch.Tensor, ...]]:
    """``L + Σ λ_ℓ mean((y_ℓ − s_ℓ)²)``, the per-layer terms and the signals, by an explicit extra backward pass.

    ``detached`` computes the signals without a graph (one first-order pass from ``L`` down to the
    shallowest ``y_ℓ``); ``full`` builds the graph of the signals so the total's backward is second order.
    """
    if target not in ("detached", "full"):
        raise ValueError(f"target must be detached or full, got {target!r}")
    signals = surprise_signals(loss, hidden, create_graph=target == "full")
    terms = [aux_loss(y, s if target == "full" else s.detach(), w) for y, s, w in zip(hidden, signals, weights)]
    return loss + sum(terms), terms, signals
