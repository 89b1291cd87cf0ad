"""Control for ``surprise``: ``L + Σ λ_ℓ·mean(y_ℓ²)`` at the same blocks, on top of the same base strategy.

On the default model the surprise target ``∇_y L`` is about 0.002 of ``y`` in RMS (logged by
``surprise`` as ``surprise_ratio_l<ℓ>``), so seed 003's ``mean((y − ∇_y L)²)`` is ``mean(y²)`` to within
a few parts in a thousand: numerically an activation penalty. This strategy *is* that penalty — same
options (minus ``target``), same layers, same λ, same base — so the report shows directly whether the
two rows differ. With the target zeroed, surprise's parameter gradients equal these (a test checks it).
One forward and one backward: no signal to compute.
"""

from __future__ import annotations

from dataclasses import dataclass

from clbench.config.options import opt
from clbench.strategies.surprise import Surprise
from clbench.train.registry import register
from clbench.train.strategy import LossOutput
from clbench.train.surprise import aux_loss


@dataclass(frozen=True)
class ActivationL2Options:
    base: str = opt("sft", "registered strategy that prepares the model and applies updates (sft, layer_tiers, cms, ...)")
    base_options: dict = opt({}, "options of the base strategy")  # noqa: RUF009 (opt makes a default_factory)
    layers: tuple[int, ...] = opt([-1], "transformer blocks whose output is penalised (negative: from the end)")
    weights: tuple[float, ...] = opt([0.1], "λ per layer, or one value for all (surprise's default)")
    every_n: int = opt(1, "add the penalty at task steps that are multiples of every_n")
    enabled: bool = opt(True, "false: the base strategy alone")


@register("activation_l2")
class ActivationL2(Surprise):
    """Activation L2 at surprise's blocks: λ·mean(y²), the control that shows what surprise adds."""

    Options = ActivationL2Options
    log_name = "activation_l2"

    def loss(self, model, batch):
        if not self.objective_on:
            return self.base.loss(model, batch)
        hidden: dict = {}
        handles = [block.register_forward_hook(self._capture(i, hidden)) for i, block in enumerate(self.blocks)]
        try:
            out = self.base.loss(model, batch)
        finally:
            for h in handles:
                h.remove()
        chosen = [i for i in range(len(self.blocks)) if i in hidden and hidden[i].requires_grad]
        if not chosen or not out.loss.requires_grad:
            return out
        terms = [aux_loss(hidden[i], 0.0, self.weights[i]) for i in chosen]
        for i, term in zip(chosen, terms):
            self._log(i, float(term.detach()) / self.train.grad_accum)
        total = sum(terms)
        return LossOutput(out.loss + (total - total.detach()), out.logs)  # logged value: the main loss
