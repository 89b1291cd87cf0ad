"""Control for the ``surprise`` plugin: ``L + Σ λ_ℓ·mean(y_ℓ²)`` at the same blocks, added to any strategy.

On the default model surprise's target ``∇_y L`` is about 0.002 of ``y`` in RMS (the surprise plugin logs
it as ``surprise_ratio_l<ℓ>``). At that size seed 003's ``mean((y − ∇_y L)²)`` is ``mean(y²)`` to within a
few parts in a thousand, which makes it numerically an activation penalty. This plugin *is* that
penalty, with the same options minus ``target``, the same layers and the same λ. It goes on the same
strategy (``{name: sft, label: activation_l2, with: [activation_l2]}``), so the report shows directly
whether the two rows differ. With the target zeroed, surprise's parameter gradients equal these (a
test checks it). It takes one forward and one backward pass, with no signal to compute. It is torch
only for now (the MLX backend refuses it by name).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clbench.config.options import opt
from clbench.strategies.surprise import Surprise
from clbench.train.registry import register_plugin
from clbench.train.surprise import aux_loss
from clbench.train.types import LossOutput, SurpriseTerms


@dataclass(frozen=True)
class ActivationL2Options:
    layers: tuple[int, ...] = opt([-1], "transformer blocks whose output is penalised (negative: from the end)")
    weights: tuple[float, ...] = opt([0.1], "λ per layer, or one value for all (surprise's default)")
    every_n: int = opt(1, "add the penalty at task steps that are multiples of every_n")
    enabled: bool = opt(True, "false: the strategy alone")


@register_plugin("activation_l2")
class ActivationL2(Surprise):
    """Activation L2 at surprise's blocks: λ·mean(y²), the control that shows what surprise adds."""

    Options = ActivationL2Options
    backends = ("torch",)

    def prepare_model(self, model):
        self.choose_blocks(self.backend.decoder_blocks(model))
        return model

    def loss(self, model, batch, inner):
        if not self.objective_on:
            return inner(model, batch)
        recorded = SurpriseTerms()  # this micro-batch's terms (surprise's step_values averages them)
        self.step_terms.append(recorded)
        hidden: dict = {}

        def keep(i):
            def hook(module, args, output):
                if torch.is_grad_enabled():
                    hidden.setdefault(i, output[0] if isinstance(output, tuple) else output)
            return hook

        handles = [block.register_forward_hook(keep(i)) for i, block in enumerate(self.blocks)]
        try:
            out = inner(model, batch)
        finally:
            for h in handles:
                h.remove()
        chosen = [i for i in range(len(self.blocks)) if i in hidden and hidden[i].requires_grad]
        if not chosen or not out.loss.requires_grad:
            return out
        terms = [aux_loss(hidden[i], 0.0, self.weights[i]) for i in chosen]
        for i, term in zip(chosen, terms):
            recorded.add(i, float(term.detach()))
        total = sum(terms)
        return LossOutput(out.loss + (total - total.detach()), out.logs)  # logged value: the main loss

    def step_log(self):
        return {f"activation_l2_l{layer}": v for layer, v in self.step_values()[0].items()}

    def diagnostics(self):
        per_layer = {str(layer): {"weight": self.weights[i], "steps": len(self.task_aux.get(layer, [])),
                                  "aux_mean": (sum(v) / len(v)) if (v := self.task_aux.get(layer)) else None}
                     for i, layer in enumerate(self.layer_index)}
        return {"activation_l2": {"every_n": self.options.every_n, "enabled": self.options.enabled,
                                  "layers": per_layer}}

    def checkpoint_metadata(self):
        return {"activation_l2": {"layers": self.layer_index, "weights": self.weights}}
