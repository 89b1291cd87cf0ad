"""Nested-learning tiers by layer depth (seed 000): tier i updates every f_i steps.

LoRA (or full) parameters are split into contiguous groups of transformer blocks. With the default
frequencies [1, 2, 4], tier 0 updates at every step, tier 1 at even steps and tier 2 at multiples of 4
(steps count from 1 within a task), so 20 steps give [20, 10, 5] updates. Which end of the network is
fast is an option because the seed argues both ways ("shallow layers learn general features" yet
"shallow → fast"); the benchmark settles it:

* ``shallow_fast`` (default, the seed's recommendation): the first blocks form tier 0;
* ``deep_fast``: the last blocks form tier 0 — with ``inactive: skip`` the backward pass then stops
  above the inactive shallow blocks on most steps, which makes a step cheaper than plain LoRA.

Parameters without a block index (full mode: embeddings, final norm) go to the slowest tier with a
warning naming them. The tier mechanism, its semantics and its diagnostics are ``clbench.train.tiers.updater``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from clbench.config.options import opt
from clbench.train.registry import register
from clbench.train.tiers.schedule import tiers_by_depth
from clbench.train.tiers.updater import TieredStrategy, TierOptions


@dataclass(frozen=True)
class LayerTierOptions(TierOptions):
    order: Literal["shallow_fast", "deep_fast"] = opt("shallow_fast", "which blocks form the fastest tier")


@register("layer_tiers")
class LayerTiers(TieredStrategy):
    """Nested learning: parameters tiered by layer depth, tier i updating every frequencies[i] steps."""

    family = "nested learning"

    Options = LayerTierOptions

    def initial_tier_map(self, model):
        return tiers_by_depth(self.trainable, len(self.options.frequencies), self.options.order)
