"""Finding the transformer blocks of a torch model, whatever wraps it (peft, the CMS chain)."""

from __future__ import annotations

import re

import torch

BLOCK_LIST = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)$")


def decoder_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of ``model`` in depth order (the first ``ModuleList`` named like
    ``layers``/``h``/``blocks``, as in Llama, GPT-2, Qwen, Mistral, also inside a peft wrapper)."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) and BLOCK_LIST.search(name):
            return list(module)
    raise ValueError(f"{type(model).__name__} has no list of transformer blocks named layers/h/blocks")
