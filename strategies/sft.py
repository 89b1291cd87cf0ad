"""Standard supervised fine-tuning: every trainable parameter updates at every step.

The reference every other strategy is compared with. LoRA through peft by default (``mode: lora``);
``mode: full`` trains every weight of the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from clbench.modeling.lora import add_lora
from clbench.registry import register
from clbench.strategy import Strategy
from clbench.typed import check_bounds, opt


@dataclass(frozen=True)
class LoraOptions:
    """Options shared by every LoRA-based strategy (strategies subclass this)."""

    mode: Literal["lora", "full"] = opt("lora", "lora (peft adapters on all linear layers) or full (every weight)")
    rank: int = opt(16, "LoRA rank r")
    alpha: float = opt(32.0, "LoRA alpha (scale = alpha / r)")
    dropout: float = opt(0.0, "LoRA dropout")
    target_modules: tuple[str, ...] = opt([], "module names to adapt; empty = every linear layer")

    def __post_init__(self):
        check_bounds(self)  # subclasses' bounded fields (ge/gt/le in opt), also when built in Python


def prepare_lora_or_full(model, options: LoraOptions):
    """Apply ``options.mode``: wrap with LoRA, or leave every parameter trainable."""
    if options.mode == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    return add_lora(model, options.rank, options.alpha, options.dropout, list(options.target_modules) or None)


@register("sft")
class SFT(Strategy):
    """Standard SFT: all trainable parameters (LoRA or full) update every step."""

    Options = LoraOptions

    def prepare_model(self, model):
        return prepare_lora_or_full(model, self.options)
