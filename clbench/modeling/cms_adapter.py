"""The Continuum Memory System as an adapter: a chain of small residual MLPs after each feed-forward.

Seed 004, eq. 70: ``y_t = MLP^(f_k)( ... MLP^(f_1)(x_t))`` — a chain of MLP blocks, one per level, each
updated at its own frequency (eq. 71, applied by ``clbench.train.tiers.updater``). Here the chain is appended to the
output of every transformer block's feed-forward network, and each level is a residual block
``h + W_down·σ(W_up·h)`` whose ``W_down`` (and bias) start at zero: the adapted model computes exactly
what the base model computes until the first update, as LoRA's zero-initialised B does. Everything
else in the model is frozen, so a checkpoint is the chain alone.

Levels are applied in the order given — level 0 first — so listing chunk sizes from fast to slow
follows eq. 70 (the innermost block is the highest-frequency one). Every level module carries its
``level`` explicitly: the tier of an adapter parameter is its level, not its block depth.
"""

from __future__ import annotations

import torch
from torch import nn

from clbench.modeling.blocks import decoder_blocks

FFN_NAMES = ("mlp", "feed_forward", "ffn")


class CMSLevel(nn.Module):
    """One level of the chain: ``h + W_down σ(W_up h)``, starting as the identity."""

    def __init__(self, width: int, hidden: int, level: int, dtype=None, device=None):
        super().__init__()
        self.level = level
        self.up = nn.Linear(width, hidden, dtype=dtype, device=device)
        self.down = nn.Linear(hidden, width, dtype=dtype, device=device)
        self.act = nn.SiLU()
        nn.init.zeros_(self.down.weight)
        nn.init.zeros_(self.down.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.down(self.act(self.up(h)))


def check_chain(n_levels: int, hidden: int) -> None:
    if n_levels < 1 or hidden < 1:
        raise ValueError(f"need at least one level and a positive hidden width, got {n_levels}, {hidden}")


def feed_forward_name(block, i: int, module_type: type) -> str:
    """The attribute of block ``i`` holding its feed-forward network (the first of ``FFN_NAMES`` that is
    a ``module_type``: torch's or MLX's ``nn.Module``)."""
    attr = next((a for a in FFN_NAMES if isinstance(getattr(block, a, None), module_type)), None)
    if attr is None:
        raise ValueError(f"block {i} ({type(block).__name__}) has no feed-forward module named "
                         f"{' / '.join(FFN_NAMES)}")
    return attr


class CMSFeedForward(nn.Module):
    """A block's feed-forward network followed by the CMS chain of levels."""

    def __init__(self, ffn: nn.Module, levels: nn.ModuleList):
        super().__init__()
        self.ffn = ffn
        self.levels = levels

    def forward(self, x, *args, **kwargs):
        h = self.ffn(x, *args, **kwargs)
        for level in self.levels:
            h = level(h)
        return h


def add_cms_adapters(model: nn.Module, n_levels: int, hidden: int) -> nn.Module:
    """Freeze ``model`` and append an ``n_levels`` chain (MLP width ``hidden``) to every block's FFN."""
    check_chain(n_levels, hidden)
    width = getattr(getattr(model, "config", None), "hidden_size", None)
    if width is None:
        raise ValueError(f"{type(model).__name__} has no config.hidden_size: cannot size the CMS adapter")
    for p in model.parameters():
        p.requires_grad_(False)
    for i, block in enumerate(decoder_blocks(model)):
        attr = feed_forward_name(block, i, nn.Module)
        ffn = getattr(block, attr)
        ref = next(ffn.parameters())
        levels = nn.ModuleList(CMSLevel(width, hidden, lvl, dtype=ref.dtype, device=ref.device)
                               for lvl in range(n_levels))
        setattr(block, attr, CMSFeedForward(ffn, levels))
    return model


def adapter_levels(model: nn.Module) -> dict[str, int]:
    """``{parameter name: level}`` for every CMS adapter parameter of ``model``."""
    return {f"{name}.{pname}": module.level
            for name, module in model.named_modules() if isinstance(module, CMSLevel)
            for pname, _ in module.named_parameters()}
