"""Surprise's gradient trick on torch: forward hooks capture the chosen blocks' outputs, and the
objective's gradient is added by a tensor hook (one layer, detached) or an explicit extra pass.

The algorithm, its options and its logs are the surprise plugin's (``clbench.strategies.surprise``) (read its docstring for
the three modes); this module is the torch half of ``Backend.surprise``, the one piece of surprise that
must differ per array library.
"""

from __future__ import annotations

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from clbench.train.surprise import aux_grad, aux_loss, signal_ratio, surprise_objective
from clbench.train.types import LossOutput, SurpriseBlocks, SurpriseTerms


def prepare(blocks, model) -> None:
    """Nothing to change in a torch model: hooks are registered per loss."""


def loss(chosen: SurpriseBlocks, model, batch, inner) -> tuple[LossOutput, SurpriseTerms]:
    """``inner(model, batch)`` (the base strategy's loss) with the surprise objective's gradient at the
    ``chosen`` blocks, and this micro-batch's terms (filled by the backward pass on the one-pass path).

    The step backpropagates each micro-batch's loss as it is (it averages the gradients once, after the
    last), so the gradient reaching a block's output here is this micro-batch's ``∇_y L``."""
    terms = SurpriseTerms()
    hidden: dict[int, torch.Tensor] = {}
    handles = [block.register_forward_hook(_capture(chosen, i, hidden)) for i, block in enumerate(chosen.blocks)]
    try:
        if chosen.target == "full":
            # fused attention kernels (flash / memory-efficient, CPU and CUDA) have no double
            # backward; the math kernel is plain differentiable ops
            with sdpa_kernel([SDPBackend.MATH]):
                out = inner(model, batch)
        else:
            out = inner(model, batch)
    finally:
        for h in handles:
            h.remove()
    if not out.loss.requires_grad or out.loss.grad_fn is None:
        return out, terms  # nothing is updated at this step
    on = [i for i in range(len(chosen.blocks)) if i in hidden and hidden[i].requires_grad]
    if not on:
        return out, terms
    if chosen.target == "detached" and len(on) == 1:
        i = on[0]  # the deepest layer with a term: its incoming gradient is exactly ∇_y L
        hidden[i].register_hook(_add_aux_grad(chosen.weights[i], hidden[i].detach(), terms, i))
        return out, terms
    ys = [hidden[i] for i in on]
    total, values, signals = surprise_objective(out.loss, ys, [chosen.weights[i] for i in on], chosen.target)
    for i, y, signal, term in zip(on, ys, signals, values):
        terms.add(i, float(term.detach()), signal_ratio(y, signal))
    # the value of the main loss (what the trainer logs), the gradient of the whole objective
    return LossOutput(out.loss.detach() + (total - total.detach()), out.logs), terms


def _capture(chosen: SurpriseBlocks, i: int, hidden: dict):
    full = chosen.target == "full"

    def hook(module, args, output):
        if not torch.is_grad_enabled():
            return  # e.g. a teacher's forward pass inside the base strategy's loss
        if i in hidden:
            raise RuntimeError(f"surprise: block {chosen.index[i]} ran twice with gradients in one loss of the "
                               "strategy it is added to; its output y is ambiguous")
        y = output[0] if isinstance(output, tuple) else output
        if full and not y.requires_grad:
            y.requires_grad_()  # nothing below trains now, but ∇_y L still depends on what follows
        hidden[i] = y

    return hook


def _add_aux_grad(weight: float, y: torch.Tensor, terms: SurpriseTerms, i: int):
    def hook(signal):  # ∇_y L of this micro-batch
        terms.add(i, float(aux_loss(y, signal, weight)), signal_ratio(y, signal))
        return signal + aux_grad(y, signal, weight)

    return hook
