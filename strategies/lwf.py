"""Learning without forgetting (Li & Hoiem 2017): distil the previous model's outputs on the new data.

The teacher is the model as it was when the current task started — the trainable parameters are
snapshotted in ``before_task`` and swapped in with :func:`torch.func.functional_call` (no copy of the
model, exact) to compute the teacher's logits under ``no_grad``. The loss is
``task loss + w · T² · KL(teacher_T ‖ student_T)`` over every non-padding position
(:func:`clbench.train.penalties.distillation_kl`); it equals the task loss while the model is its teacher.

The T² factor (``t_squared``, default on) is Hinton et al.'s (2015) distillation convention, which keeps
the gradient scale independent of T; Li & Hoiem's loss λ_o · L_old has no such factor, so their λ_o
corresponds to ``distill_weight · T²`` here (at the default T = 2: ``distill_weight`` 1 is λ_o = 4). With
``t_squared: false`` the loss is Li & Hoiem's literal ``task loss + w · KL`` and ``distill_weight`` is their
λ_o. (Until the LoRA options became their own group, this weight was named ``alpha`` and also set the
adapters' LoRA alpha — scale 1/16 instead of 2; ``lora: {alpha}`` is LoRA's now.)

For the first trained task the teacher is the base model (``first_task_teacher``, default on): for a
language model that is the natural choice, since the base model holds the general knowledge the stream
must not erase. Turn it off for a randomly initialised model (the digits cross-check), where the
first task has nothing to protect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from clbench.config.options import opt
from clbench.modeling.lora import LoraOptions
from clbench.strategies.sft import SFT
from clbench.train.penalties import distillation_kl
from clbench.train.registry import register
from clbench.train.strategy import LossOutput


@dataclass(frozen=True)
class LwFOptions(LoraOptions):
    # ``alpha`` was this weight and LoRA's alpha at once: a config that sets it is asked which it means
    MOVED_KEYS: ClassVar[dict] = {**LoraOptions.MOVED_KEYS, "alpha": ("distill_weight", "lora.alpha")}

    distill_weight: float = opt(1.0, "weight w of the distillation term", ge=0)
    temperature: float = opt(2.0, "softmax temperature T of the distillation", gt=0)
    first_task_teacher: bool = opt(True, "distil to the base model during the first trained task")
    t_squared: bool = opt(True, "multiply the distillation term by T² (Hinton 2015); false: Li & Hoiem's "
                                "w·KL, where w is their λ_o")


def _position_mask(batch: dict, logits: torch.Tensor) -> torch.Tensor | None:
    """The attention mask when logits are per token (language model), else None (one row per example)."""
    mask = batch.get("attention_mask")
    return mask if mask is not None and mask.shape == logits.shape[:-1] else None


@register("lwf")
class LwF(SFT):  # SFT's LoRA-or-full set-up; this adds the method
    """Learning without forgetting: KL distillation to the model as it was before the current task."""

    backends = ("torch",)  # the teacher's forward is torch.func.functional_call over the trainable tensors

    Options = LwFOptions

    def __init__(self, options=None, **kw):
        super().__init__(options, **kw)
        self.teacher: dict[str, torch.Tensor] | None = None
        self.trained_before = False  # has any task been trained (so a teacher exists without the base)?
        self._last_kd = 0.0

    def before_task(self, task, model):
        has_teacher = self.trained_before or self.options.first_task_teacher
        self.teacher = {n: p.detach().clone() for n, p in self.trainable.items()} if has_teacher else None

    def teacher_logits(self, model, batch) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return torch.func.functional_call(model, self.teacher, args=(), kwargs=inputs).logits
        finally:
            model.train(was_training)

    def loss(self, model, batch):
        if self.teacher is None or self.options.distill_weight == 0:
            return LossOutput(self.backend.lm_loss(model, batch))
        teacher = self.teacher_logits(model, batch)
        out = model(**batch)
        kd = distillation_kl(out.logits, teacher, self.options.temperature, _position_mask(batch, out.logits),
                             self.options.t_squared)
        self._last_kd = float(kd.detach())
        return LossOutput(out.loss + self.options.distill_weight * kd, {"lwf_kd": self._last_kd})

    def after_task(self, task, model):
        self.trained_before = True
        self.teacher = None

    def state_dict(self):
        return {"trained_before": self.trained_before}

    def load_state_dict(self, state):
        self.trained_before = bool(state["trained_before"])

    def diagnostics(self):
        return {"lwf_kd_last": self._last_kd}
