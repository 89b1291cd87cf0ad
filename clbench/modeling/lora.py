"""LoRA through peft, shared by every strategy that trains adapters."""

from __future__ import annotations

import torch


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
