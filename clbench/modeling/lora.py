"""LoRA through peft, shared by every strategy that trains adapters: the options every LoRA-based
strategy accepts and the set-up that applies them (torch; the MLX twin of the set-up is
``clbench.backends.mlx.lora``).

LoRA's own knobs are one group, ``lora: {rank, alpha, dropout, target_modules}`` — peft's one config per
tuner — rather than fields beside the strategy's. A strategy's options subclass :class:`LoraOptions` and
add their own fields next to ``mode`` and ``lora``, so a strategy option named ``alpha`` or ``rank`` (a
distillation weight, a penalty) can never replace LoRA's: with flat fields, lwf's distillation weight
``alpha`` (1.0) silently became its adapters' alpha and scaled them by 1/16 instead of 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from clbench.config.options import check_bounds, opt


@dataclass(frozen=True)
class LoraSettings:
    """peft's LoRA configuration: the ``lora:`` group of a LoRA-based strategy's options."""

    rank: int = opt(16, "LoRA rank r", ge=1)
    alpha: float = opt(32.0, "LoRA alpha: the adapters' update is scaled by alpha / rank", gt=0)
    dropout: float = opt(0.0, "LoRA dropout", ge=0, le=1)
    target_modules: tuple[str, ...] = opt([], "module names to adapt; empty = every linear layer")

    def __post_init__(self):
        check_bounds(self)


@dataclass(frozen=True)
class LoraOptions:
    """Options shared by every LoRA-based strategy (strategies subclass this and add their own fields)."""

    # the flat keys of configs written before LoRA's options became a group: each names where it went
    MOVED_KEYS: ClassVar[dict] = {k: (f"lora.{k}",) for k in ("rank", "alpha", "dropout", "target_modules")}

    mode: Literal["lora", "full"] = opt("lora", "lora (peft adapters on all linear layers) or full (every weight)")
    lora: LoraSettings = field(default_factory=LoraSettings, metadata={
        "help": "LoRA's configuration (mode: lora): {rank, alpha, dropout, target_modules}"})
    freeze_bottom: int = opt(0, "the first k transformer blocks stay as pretrained: no adapters there (mode full: "
                                "they and the embeddings are frozen); the control of Zheng et al. 2025", ge=0)

    def __post_init__(self):
        check_bounds(self)  # subclasses' bounded fields (ge/gt/le in opt), also when built in Python


def prepare_lora_or_full(model, options: LoraOptions):
    """Apply ``options.mode``: wrap with LoRA (``options.lora``), or leave every parameter trainable; with
    ``freeze_bottom`` = k, the first k blocks keep their pretrained weights (no adapters, or frozen)."""
    k = options.freeze_bottom
    if options.mode == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        if k:
            for p in frozen_bottom_parameters(model, k):
                p.requires_grad_(False)
        return model
    lora = options.lora
    targets = list(lora.target_modules) or None
    if k:
        targets = top_block_linears(model, k, targets)
    return add_lora(model, lora.rank, lora.alpha, lora.dropout, targets)


def _blocks_below(model, k: int) -> tuple[list[torch.nn.Module], list[torch.nn.Module]]:
    """The first ``k`` decoder blocks and the rest; ``k`` must leave at least one block to train."""
    from clbench.modeling.blocks import decoder_blocks

    blocks = decoder_blocks(model)
    if k >= len(blocks):
        from clbench.errors import ConfigError

        raise ConfigError("strategies[].options.freeze_bottom", f"{k} freezes every one of the model's {len(blocks)} "
                          f"blocks; at most {len(blocks) - 1}")
    return blocks[:k], blocks[k:]


def top_block_linears(model, k: int, targets: list[str] | None) -> list[str]:
    """Full names of the linear layers inside blocks k, k+1, ... (those whose last name component is in
    ``targets``, when given): peft's ``layers_to_transform`` refuses the ``"all-linear"`` shorthand, and
    a list of full names is what it matches exactly."""
    _, top = _blocks_below(model, k)
    top_ids = {id(b) for b in top}
    names = []
    for name, module in model.named_modules():
        if id(module) in top_ids:
            names += [f"{name}.{sub}" for sub, m in module.named_modules()
                      if isinstance(m, torch.nn.Linear) and (targets is None or sub.split(".")[-1] in targets)]
    return names


def frozen_bottom_parameters(model, k: int) -> list[torch.nn.Parameter]:
    """Full fine-tuning's bottom: the input embeddings and the first k blocks (with tied embeddings, the
    output head is the input embedding and freezes with it)."""
    bottom, _ = _blocks_below(model, k)
    params = [p for b in bottom for p in b.parameters()]
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return params + (list(embeddings.parameters()) if embeddings is not None else [])


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
