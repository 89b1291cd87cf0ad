"""The CMS adapter in MLX: a chain of residual MLPs after every block's feed-forward (seed 004, eq. 70).

The MLX twin of ``clbench.modeling.cms_adapter`` (read its docstring): level l is ``h + W_down·silu(W_up·h)`` with
``W_down`` and its bias starting at zero, so the adapted model computes exactly the base model's
function until the first update; levels run in order (level 0 innermost, the fastest with chunk sizes
listed fast → slow); everything else is frozen, so a checkpoint is the chain alone. The checks and the
search for a block's feed-forward module are that module's own functions.
"""

from __future__ import annotations

import mlx.core as mx
from mlx import nn
from mlx.utils import tree_flatten

from clbench.modeling.cms_adapter import check_chain, feed_forward_name


# CMSLevel and CMSFeedForward are clbench.modeling.cms_adapter's classes line for line, on MLX's nn
class CMSLevel(nn.Module):
    """One level of the chain: ``h + W_down silu(W_up h)``, starting as the identity."""

    def __init__(self, width: int, hidden: int, level: int):
        super().__init__()
        self.level = level
        self.up = nn.Linear(width, hidden)
        self.down = nn.Linear(hidden, width)
        self.down.weight = mx.zeros_like(self.down.weight)
        self.down.bias = mx.zeros_like(self.down.bias)

    def __call__(self, h: mx.array) -> mx.array:
        return h + self.down(nn.silu(self.up(h)))


class CMSFeedForward(nn.Module):
    """A block's feed-forward network followed by the CMS chain of levels."""

    def __init__(self, ffn: nn.Module, levels: list[CMSLevel]):
        super().__init__()
        self.ffn = ffn
        self.levels = levels

    def __call__(self, x, *args, **kwargs):
        h = self.ffn(x, *args, **kwargs)
        for level in self.levels:
            h = level(h)
        return h


def add_cms_adapters(model: nn.Module, n_levels: int, hidden: int) -> nn.Module:
    """Freeze ``model`` and append an ``n_levels`` chain (MLP width ``hidden``) to every block's FFN."""
    check_chain(n_levels, hidden)
    width = getattr(getattr(model, "args", None), "hidden_size", None)
    if width is None:
        raise ValueError(f"{type(model).__name__} has no args.hidden_size: cannot size the CMS adapter")
    model.freeze()
    dtype = next(v.dtype for _, v in tree_flatten(model.parameters()) if mx.issubdtype(v.dtype, mx.floating))
    for i, block in enumerate(model.layers):
        attr = feed_forward_name(block, i, nn.Module)
        levels = [CMSLevel(width, hidden, lvl) for lvl in range(n_levels)]
        for lvl in levels:
            lvl.set_dtype(dtype)
        setattr(block, attr, CMSFeedForward(getattr(block, attr), levels))
    return model


def adapter_levels(model: nn.Module) -> dict[str, int]:
    """``{parameter name: level}`` for every CMS adapter parameter of ``model``."""
    return {f"{name}.{pname}": module.level
            for name, module in model.named_modules() if isinstance(module, CMSLevel)
            for pname, _ in tree_flatten(module.parameters())}
