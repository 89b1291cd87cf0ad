"""Surprise's gradient trick on MLX: the MLX half of ``Backend.surprise``.

The algorithm, its options and its logs are the surprise plugin's (``clbench.strategies.surprise``) (read its docstring):
chosen blocks ℓ get ``λ_ℓ · mean((y_ℓ − ∇_{y_ℓ}L)²)`` added to the main loss ``L``.

How the gradient is computed in MLX — the chosen blocks' class is swapped for a subclass that passes
the block's output through a *tap* (parameter names and everything else unchanged):

* ``detached`` with one layer (the default): one backward pass. The tap is an identity whose custom
  VJP (``mx.custom_function``) receives exactly ``∇_{y_ℓ}L`` as its cotangent (nothing after ℓ depends on
  the auxiliary term) and returns ``cotangent + 2λ(y_ℓ − ∇_{y_ℓ}L)/N`` — the torch hook's trick, no extra
  pass. If nothing at or below ℓ is trainable at a step (an inactive shallow tier), MLX never asks for
  that cotangent and the layer gets no term, as in torch.
* ``detached`` with several layers, and ``full``: the signals come from ``mx.grad`` of the main loss with
  respect to zero perturbations added at the taps (one extra forward and backward), then the explicit
  objective is differentiated; ``detached`` stops the gradient at the signals, ``full`` differentiates
  through them (MLX's nested transforms give the second-order term).
"""

from __future__ import annotations

import os

import mlx.core as mx
from mlx import nn

from clbench.train.types import LossOutput, SurpriseBlocks, SurpriseTerms

_TAPPED: dict[type, type] = {}


def make_tappable(block: nn.Module) -> None:
    """Give ``block`` a ``surprise_tap`` (None: identity) applied to its output, by swapping its class
    for a cached subclass; its parameters, names and behaviour without a tap are unchanged."""
    cls = type(block)
    if cls not in _TAPPED.values():
        if cls not in _TAPPED:
            class Tapped(cls):
                def __call__(self, *args, **kwargs):
                    y = super().__call__(*args, **kwargs)
                    tap = self.surprise_tap
                    return y if tap is None else tap(y)

            Tapped.__name__ = Tapped.__qualname__ = f"Surprise{cls.__name__}"
            _TAPPED[cls] = Tapped
        block.__class__ = _TAPPED[cls]
    block.surprise_tap = None


def aux_term(y: mx.array, target: mx.array, weight: float) -> mx.array:
    """``weight · mean((y − target)²)`` (``clbench.train.surprise.aux_loss`` in MLX)."""
    return weight * mx.mean(mx.square(y.astype(mx.float32) - target.astype(mx.float32)))


def grad_adding_tap(weight: float, terms: SurpriseTerms, i: int):
    """Identity whose VJP adds ``∂aux/∂y = 2·weight·(y − g)/N`` to the incoming cotangent ``g = ∇_y L``
    (this micro-batch's: the step differentiates each micro-batch's loss as it is), and records the
    term in ``terms`` at position ``i``."""

    @mx.custom_function
    def tap(y):
        return y

    @tap.vjp
    def tap_vjp(primals, cotangent, output):
        y = primals[0] if isinstance(primals, (tuple, list)) else primals
        terms.add(i, aux_term(y, cotangent, weight))
        return (cotangent + ((2.0 * weight / y.size) * (y - cotangent)).astype(cotangent.dtype),)

    return tap


def prepare(blocks, model) -> None:
    """Make the chosen blocks tappable (their class swapped for a subclass; names unchanged)."""
    for block in blocks:
        make_tappable(block)


def _set_taps(chosen: SurpriseBlocks, taps) -> None:
    for block, tap in zip(chosen.blocks, taps):
        block.surprise_tap = tap


def loss(chosen: SurpriseBlocks, model, batch, inner) -> tuple[LossOutput, SurpriseTerms]:
    """``inner(model, batch)`` (the base strategy's loss) with the surprise objective at the ``chosen``
    blocks, and this micro-batch's terms as MLX scalars (filled by the backward pass on the one-pass path)."""
    terms = SurpriseTerms()
    if chosen.target == "detached" and len(chosen.blocks) == 1:
        _set_taps(chosen, [grad_adding_tap(chosen.weights[0], terms, 0)])
        try:
            return inner(model, batch), terms
        finally:
            _set_taps(chosen, [None])
    return _explicit_loss(chosen, model, batch, inner, terms), terms


def _explicit_loss(chosen: SurpriseBlocks, model, batch, inner, terms: SurpriseTerms):
    """``L + Σ λ mean((y − s)²)`` with ``s = ∇_y L`` from an extra pass (detached: ``s`` held constant);
    each term goes into ``terms``."""
    n = len(chosen.blocks)
    seen: list = [None] * n

    def tap(i, delta=None):
        def f(y):
            seen[i] = y
            return y if delta is None else y + delta
        return f

    def main_loss(deltas):  # L as a function of perturbations of the chosen blocks' outputs
        _set_taps(chosen, [tap(i, d) for i, d in enumerate(deltas)])
        return inner(model, batch).loss

    batch_size, length = batch["input_ids"].shape
    zeros = [mx.zeros((batch_size, length, model.args.hidden_size)) for _ in range(n)]
    # mlx-lm's compiled kernels (e.g. swiglu) cannot be differentiated once more after a nested
    # mx.grad ("[Compiled] Cannot vjp primitive"): trace this objective with compilation off
    mx.disable_compile()
    try:
        signals = mx.grad(main_loss)(zeros)  # ∇_{y_ℓ} L at the unperturbed model
        if chosen.target == "detached":
            signals = [mx.stop_gradient(sig) for sig in signals]
        _set_taps(chosen, [tap(i) for i in range(n)])
        out = inner(model, batch)
        main, logs = out.loss, out.logs
    finally:
        _set_taps(chosen, [None] * n)
        if not os.environ.get("MLX_DISABLE_COMPILE"):
            mx.enable_compile()
    values = [aux_term(y, sig, w) for y, sig, w in zip(seen, signals, chosen.weights)]
    for i, term in enumerate(values):
        terms.add(i, mx.stop_gradient(term))
    total = main + sum(values)
    # the value of the main loss (what the trainer logs), the gradient of the whole objective
    return LossOutput(mx.stop_gradient(main) + (total - mx.stop_gradient(total)), logs)
