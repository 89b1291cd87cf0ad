"""Standard supervised fine-tuning: every trainable parameter updates at every step.

The reference every other strategy is compared with. LoRA through peft by default (``mode: lora``);
``mode: full`` trains every weight of the model.
"""

from __future__ import annotations

from clbench.modeling.lora import LoraOptions
from clbench.train.registry import register
from clbench.train.strategy import Strategy


@register("sft")
class SFT(Strategy):
    """Standard SFT: all trainable parameters (LoRA or full) update every step."""

    family = "baselines"

    Options = LoraOptions

    def prepare_model(self, model):
        return self.backend.prepare_lora_or_full(model, self.options)
