"""CMS (Continuum Memory System, seed 004 eqs. 70–71) on MLX: levels accumulate gradients over chunks.

The algorithm and options are torch ``strategies/cms.py``'s (read its docstring for ``scale``): level l
(chunk size C_l) sums its gradients at every step and applies the chunk at task steps that are
multiples of C_l (``..tiered.TieredUpdater`` with ``accumulate``). ``form: lora`` puts the levels over
the LoRA (or full) parameters by depth; ``form: adapter`` trains only a chain of residual MLPs after
every feed-forward (``..cms_adapter``). ``scale: inverse_chunk`` divides a level's learning rate by C_l
(a per-tensor learning-rate factor, where torch uses parameter groups); ``mean`` divides the chunk's
sum by the steps summed.
"""

from __future__ import annotations

from clbench.backends.mlx.cms_adapter import adapter_levels, add_cms_adapters
from clbench.backends.mlx.tiered import TieredStrategy, TieredUpdater
from clbench.strategies.cms import CMSOptions
from clbench.train.tiers.schedule import tiers_by_depth


class CMS(TieredStrategy):
    """Continuum Memory System: levels accumulate gradients over chunks of C_l steps (eq. 71)."""

    Options = CMSOptions
    schedule_field = "chunk_sizes"

    def make_updater(self):
        o = self.options
        return TieredUpdater(o.chunk_sizes, "accumulate", reduce="mean" if o.scale == "mean" else "sum",
                             lr_scale=[1.0 / c for c in o.chunk_sizes] if o.scale == "inverse_chunk" else None)

    # prepare_model and initial_tier_map are torch CMS's, line for line, over the MLX adapter functions
    def prepare_model(self, model):
        if self.options.form == "adapter":
            return add_cms_adapters(model, len(self.options.chunk_sizes), self.options.adapter_hidden)
        return super().prepare_model(model)

    def initial_tier_map(self, model):
        if self.options.form == "adapter":
            return adapter_levels(model)
        return tiers_by_depth(self.trainable, len(self.options.chunk_sizes), self.options.order)
