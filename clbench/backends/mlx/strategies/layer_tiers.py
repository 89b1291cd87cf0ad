"""Layer-depth tiers on MLX: tensors split into tiers by block index, tier i updating every f_i steps.

The algorithm and options are torch ``strategies/layer_tiers.py``'s: the tier map is
``clbench.train.tiers.schedule.tiers_by_depth`` (unmapped tensors → slowest tier, with a warning), and the semantics
(``inactive: skip | accumulate``) are ``..tiered.TieredUpdater``'s.
"""

from __future__ import annotations

from clbench.backends.mlx.tiered import TieredStrategy
from clbench.strategies.layer_tiers import LayerTierOptions
from clbench.train.tiers.schedule import tiers_by_depth


class LayerTiers(TieredStrategy):
    """Nested learning: parameters tiered by layer depth, tier i updating every frequencies[i] steps."""

    Options = LayerTierOptions

    def initial_tier_map(self, model):
        return tiers_by_depth(self.trainable, len(self.options.frequencies), self.options.order)
