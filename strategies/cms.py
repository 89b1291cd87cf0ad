"""The Continuum Memory System (seed 004, eqs. 70–71): levels whose gradients accumulate over a chunk.

Level l has chunk size C_l. Its gradients are computed at every step and summed; at task steps that are
multiples of C_l the chunk's sum is applied and the sum restarts (eq. 71); in between, the level does
not change. Two forms:

* ``lora`` — the levels are the LoRA (or, with ``mode: full``, all) parameters split by block depth
  (``order``: shallow blocks fastest by default, as the chain of eq. 70 runs fast → slow);
* ``adapter`` — a chain of small residual MLPs, one per level, appended to every block's feed-forward
  output (``clbench.modeling.cms_adapter``); everything else is frozen and the checkpoint is the chain alone.

``scale`` — how a chunk's sum becomes an update, so the benchmark can show what each one does:

* ``none`` (default): the sum itself, at the optimizer's learning rate — eq. 71, ``θ -= Σ η f(θ; x_t)``;
* ``inverse_chunk``: the sum, with the level's learning rate divided by C_l (the earlier implementation,
  seed 003: "LR_medium = LR/16");
* ``mean``: the chunk's mean gradient (sum / C_l) at the optimizer's learning rate.

With plain SGD, ``inverse_chunk`` and ``mean`` are the same update, −(η/C)·Σg. Under Adam they are not:
Adam divides by the running RMS of the gradients it is given, so the *scale* of a summed gradient
cancels (``none`` ≈ ``mean``), while dividing the *learning rate* by C_l shrinks every step of a slow
level C_l-fold — with C = 256 it is nearly frozen. The learning rate used for a chunk is the one of its
boundary step (exact for the constant schedule).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from clbench.config.options import opt
from clbench.errors import ConfigError
from clbench.modeling.lora import LoraOptions
from clbench.train.registry import register
from clbench.train.tiers.schedule import tiers_by_depth
from clbench.train.tiers.updater import TieredStrategy, TieredUpdater


@dataclass(frozen=True)
class CMSOptions(LoraOptions):
    form: Literal["lora", "adapter"] = opt("lora", "levels over LoRA parameters by depth, or a chain of MLP adapters")
    chunk_sizes: tuple[int, ...] = opt([1, 2, 4], "C_l per level, fast to slow: level l updates every C_l steps")
    scale: Literal["none", "inverse_chunk", "mean"] = opt(
        "none", "none: apply the chunk's gradient sum (eq. 71); inverse_chunk: sum with lr / C_l (seed 003); "
                "mean: the chunk's mean gradient")
    order: Literal["shallow_fast", "deep_fast"] = opt("shallow_fast", "lora form: which blocks form level 0")
    adapter_hidden: int = opt(32, "adapter form: hidden width of each level's MLP")


@register("cms")
class CMS(TieredStrategy):
    """Continuum Memory System: levels accumulate gradients over chunks of C_l steps (eq. 71)."""

    Options = CMSOptions
    schedule_field = "chunk_sizes"

    @classmethod
    def options_from(cls, data, where):
        options = super().options_from(data, where)
        if options.form == "adapter" and options.mode == "full":
            raise ConfigError(f"{where}.mode", "the adapter form trains only the CMS chain; use mode: lora "
                              "(its LoRA fields are unused) or form: lora")
        if options.adapter_hidden < 1:
            raise ConfigError(f"{where}.adapter_hidden", f"must be positive, got {options.adapter_hidden}")
        return options

    def make_updater(self):
        return TieredUpdater(self.options.chunk_sizes, "accumulate",
                             reduce="mean" if self.options.scale == "mean" else "sum")

    def prepare_model(self, model):
        if self.options.form == "adapter":
            return self.backend.add_cms_adapters(model, len(self.options.chunk_sizes), self.options.adapter_hidden)
        return super().prepare_model(model)

    def initial_tier_map(self, model):
        if self.options.form == "adapter":
            return self.backend.cms_levels(model)
        return tiers_by_depth(self.trainable, len(self.options.chunk_sizes), self.options.order)

    def param_groups(self):
        if self.options.scale != "inverse_chunk":
            return super().param_groups()
        return self.tier_param_groups(self.options.chunk_sizes)  # level l's learning rate is lr / C_l
