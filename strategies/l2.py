"""L2 to the previous task's end: ``λ · ‖θ − θ_prev‖²`` on the trainable parameters.

EWC with every Fisher entry set to one: the cheapest regulariser, and the control that shows whether
EWC's importance weights matter. The anchor is snapshotted before each trained task, so for the first
task it is the starting point — the base model (a LoRA adapter starts as a no-op) — and afterwards the
parameters at the end of the previous task, which is also what a resumed run has loaded at that moment.
"""

from __future__ import annotations

from dataclasses import dataclass

from clbench.config.options import opt
from clbench.modeling.lora import LoraOptions
from clbench.strategies.sft import SFT
from clbench.train.penalties import l2_to_anchor
from clbench.train.registry import register
from clbench.train.strategy import LossOutput


@dataclass(frozen=True)
class L2Options(LoraOptions):
    lam: float = opt(0.01, "λ of the penalty λ ‖θ − θ_prev‖²", ge=0)


@register("l2")
class L2(SFT):  # SFT's LoRA-or-full set-up; this adds the method
    """L2 penalty towards the parameters at the end of the previous task."""

    backends = ("torch",)  # its penalty reads the live torch parameters

    Options = L2Options

    def __init__(self, options=None, **kw):
        super().__init__(options, **kw)
        self.anchor: dict = {}
        self._last_penalty = 0.0

    def before_task(self, task, model):
        self.anchor = {n: p.detach().clone() for n, p in self.trainable.items()}

    def loss(self, model, batch):
        loss = self.backend.lm_loss(model, batch)
        pen = l2_to_anchor(self.trainable, self.anchor, self.options.lam)
        self._last_penalty = float(pen.detach())
        return LossOutput(loss + pen, {"l2_penalty": self._last_penalty})

    def diagnostics(self):
        return {"l2_penalty_last": self._last_penalty}
