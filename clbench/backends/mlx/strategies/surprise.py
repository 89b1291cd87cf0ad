"""Surprise objectives (seed 003) on MLX, on top of any other MLX strategy.

The algorithm and options are torch ``strategies/surprise.py``'s (read its docstring): chosen blocks ℓ
get ``λ_ℓ · mean((y_ℓ − ∇_{y_ℓ}L)²)`` added to the main loss ``L`` at steps that are multiples of
``every_n``; ``base`` (an MLX strategy) prepares the model and applies the updates. The logged ``loss`` is
the main loss; each term is logged as ``surprise_aux_l<ℓ>``.

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

from clbench.backends.mlx.strategy import MLXStrategy
from clbench.errors import ConfigError
from clbench.strategies.surprise import SurpriseHooks, SurpriseOptions

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


def grad_adding_tap(weight: float, log: list):
    """Identity whose VJP adds ``∂aux/∂y = 2·weight·(y − g)/N`` to the incoming cotangent ``g = ∇_y L``."""

    @mx.custom_function
    def tap(y):
        return y

    @tap.vjp
    def tap_vjp(primals, cotangent, output):
        y = primals[0] if isinstance(primals, (tuple, list)) else primals
        log.append(aux_term(y, cotangent, weight))
        return (cotangent + ((2.0 * weight / y.size) * (y - cotangent)).astype(cotangent.dtype),)

    return tap


class Surprise(SurpriseHooks, MLXStrategy):
    """Surprise objectives: chosen blocks predict ∇_y L of their output, on top of a base strategy."""

    Options = SurpriseOptions

    def __init__(self, options=None, *, seed: int = 0, train=None):
        super().__init__(options, seed=seed, train=train)
        self._terms: dict[int, list[mx.array]] = {}  # position in self.blocks -> this step's terms

    @staticmethod
    def base_class(name: str, where: str) -> type:
        from clbench.backends.mlx.strategies import get

        if name == "surprise":
            raise ConfigError(where, "cannot build surprise on itself")
        return get(name)

    # --- the base strategy does the model, the data and the updates (SurpriseHooks) -----------------
    def prepare_model(self, model):
        model = self.base.prepare_model(model)
        self.choose_blocks(list(model.layers))
        for block in self.blocks:
            make_tappable(block)
        return model

    def before_step(self, step):
        super().before_step(step)
        self._terms = {}

    def grad_names(self, step):
        return self.base.grad_names(step)

    def apply_update(self, ctx):
        updated = self.base.apply_update(ctx)
        k = self.train.grad_accum
        self.step_aux = {self.layer_index[i]: sum(float(t) for t in terms) / k for i, terms in self._terms.items()
                         if terms}
        self.record_step_aux()
        return updated

    # --- the surprise objective ---------------------------------------------------------------------
    def _set_taps(self, taps) -> None:
        for block, tap in zip(self.blocks, taps):
            block.surprise_tap = tap

    def loss(self, model, batch):
        if not self.objective_on:
            return self.base.loss(model, batch)
        n = len(self.blocks)
        if self.options.target == "detached" and n == 1:
            deepest = 0
            self._terms.setdefault(deepest, [])
            self._set_taps([grad_adding_tap(self.weights[0], self._terms[deepest])])
            try:
                return self.base.loss(model, batch)
            finally:
                self._set_taps([None])
        return self._explicit_loss(model, batch)

    def _explicit_loss(self, model, batch):
        """``L + Σ λ mean((y − s)²)`` with ``s = ∇_y L`` from an extra pass (detached: ``s`` held constant)."""
        n = len(self.blocks)
        seen: list = [None] * n

        def tap(i, delta=None):
            def f(y):
                seen[i] = y
                return y if delta is None else y + delta
            return f

        def main_loss(deltas):  # L as a function of perturbations of the chosen blocks' outputs
            self._set_taps([tap(i, d) for i, d in enumerate(deltas)])
            return self.base.loss(model, batch)[0]

        batch_size, length = batch["input_ids"].shape
        zeros = [mx.zeros((batch_size, length, model.args.hidden_size)) for _ in range(n)]
        # mlx-lm's compiled kernels (e.g. swiglu) cannot be differentiated once more after a nested
        # mx.grad ("[Compiled] Cannot vjp primitive"): trace this objective with compilation off
        mx.disable_compile()
        try:
            signals = mx.grad(main_loss)(zeros)  # ∇_{y_ℓ} L at the unperturbed model
            if self.options.target == "detached":
                signals = [mx.stop_gradient(s) for s in signals]
            self._set_taps([tap(i) for i in range(n)])
            main, logs = self.base.loss(model, batch)
        finally:
            self._set_taps([None] * n)
            if not os.environ.get("MLX_DISABLE_COMPILE"):
                mx.enable_compile()
        terms = [aux_term(y, s, w) for y, s, w in zip(seen, signals, self.weights)]
        for i, term in enumerate(terms):
            self._terms.setdefault(i, []).append(mx.stop_gradient(term))
        total = main + sum(terms)
        # the value of the main loss (what the trainer logs), the gradient of the whole objective
        return mx.stop_gradient(main) + (total - mx.stop_gradient(total)), logs
