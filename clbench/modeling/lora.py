"""LoRA through peft, shared by every strategy that trains adapters: the options every LoRA-based
strategy accepts and the set-up that applies them (torch; the MLX twin of the set-up is
``clbench.backends.mlx.lora``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from clbench.config.options import check_bounds, opt


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


def add_lora(model: torch.nn.Module, r: int, alpha: float, dropout: float = 0.0,
             target_modules: list[str] | str | None = None):
    """Wrap ``model`` with fresh LoRA adapters; only the adapters stay trainable.

    ``target_modules=None`` means peft's ``"all-linear"``: every linear layer but the output head, for any
    architecture, so no per-architecture table can go stale.
    """
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none",
                     target_modules=list(target_modules) if isinstance(target_modules, (list, tuple))
                     else (target_modules or "all-linear"))
    return get_peft_model(model, cfg)
