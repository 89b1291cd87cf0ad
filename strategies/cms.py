"""The Continuum Memory System (seed 004, eqs. 70–71): levels that change once per chunk, fast to slow.

Level l has chunk size C_l, counted in optimizer steps; every form learns from the main loss, its
gradients summed over a chunk and applied at the chunk's end by the outer optimizer (eq. 71). Three
forms, each named for what it is:

* ``memory`` — the paper's CMS as a memory (``clbench.modeling.cms_memory``): a chain of MLP levels
  ``x + MLP_l(LN(x))`` *beside* every block's feed-forward, zero-initialised (the pretrained model is
  unchanged until a level's first update), the pretrained weights frozen. (The same memory learning by
  its own inner δ-rule inside the forward pass, with test-time learning, is the strategy ``cms_local``,
  ``strategies/cms_local.py``; ``update`` here is ``outer`` only.)
* ``lora`` — *frequency tiers with accumulation*, not a memory: the LoRA (or, with ``mode: full``, all)
  parameters split by block depth (``order``) into levels that apply their summed gradients every C_l
  steps; ``layer_tiers`` with ``inactive: accumulate``, kept as the simplest reading of eq. 71;
* ``adapter`` — a chain of residual MLPs appended *after* every block's feed-forward output
  (``clbench.modeling.cms_adapter``; on MLX its twin ``clbench.backends.mlx.cms_adapter``), trained by the
  outer optimizer alone (an adapter, not a memory).

``clock`` — what the chunks count: ``global`` (default) counts over the whole stream, so a level slower
than a task still changes at its own period (seed 003's 1/16/256, the reimplementation's 1/4/32/128),
its partial chunk carried across task boundaries and stored with the checkpoint for a resume;
``task`` restarts at every task (the earlier behaviour). A chunk that cannot complete within the
stream (or, on the task clock, within a task) is refused before the run writes anything.

``scale`` — how a chunk's sum becomes an update:

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

import json
from dataclasses import dataclass
from typing import ClassVar, Literal

from clbench.config.options import opt
from clbench.config.periods import NEVER, Period
from clbench.errors import ConfigError
from clbench.modeling.lora import LoraOptions
from clbench.train.registry import register
from clbench.train.tiers.schedule import check_chunks_complete, tiers_by_depth
from clbench.train.tiers.updater import TieredStrategy, TieredUpdater
from clbench.train.types import RunPlan

# the local δ-rule's options, which left ``cms`` with the rule (``strategies/cms_local.py``)
LOCAL_RULE_KEYS = ("chunk_unit", "local_lr", "local_momentum", "local_decay", "surprise_threshold",
                   "test_time_updates")


@dataclass(frozen=True)
class CMSOptions(LoraOptions):
    GONE_KEYS: ClassVar[dict] = {k: f"{k!r} belongs to the local δ-rule, which is the strategy cms_local now: "
                                    "write name: cms_local (without form and update)" for k in LOCAL_RULE_KEYS}

    form: Literal["lora", "adapter", "memory"] = opt(
        "lora", "lora: frequency tiers with accumulation over LoRA by depth; adapter: MLP chain after each FFN; "
                "memory: the paper's CMS, a chain beside each FFN (all three: outer updates)")
    chunk_sizes: tuple[Period, ...] = opt([1, 2, 4], "C_l per level, fast to slow: level l updates once every C_l "
                                                     "optimizer steps; never: the level stays as it starts")
    clock: Literal["global", "task"] = opt("global", "global: chunks count over the whole stream (carried across "
                                                     "tasks and resume); task: restart at every task")
    update: Literal["outer"] = opt("outer", "outer: main-loss gradients summed over a chunk (eq. 71); the memory "
                                            "learning by its own δ-rule is the strategy cms_local")
    scale: Literal["none", "inverse_chunk", "mean"] = opt(
        "none", "none: apply the chunk's gradient sum (eq. 71); inverse_chunk: sum with lr / C_l (seed 003); "
                "mean: the chunk's mean gradient")
    order: Literal["shallow_fast", "deep_fast"] = opt("shallow_fast", "lora form: which blocks form level 0")
    adapter_hidden: int = opt(32, "adapter and memory forms: hidden width of each level's MLP")
    clip: Literal["per_tier", "global"] = opt("per_tier", "per_tier: clip each level's gradient by its own norm; "
                                                          "global: one norm over the levels applied at a step")


def adapter_chain(backend):
    """The module that builds the adapter form's chain for ``backend``: torch's, or its MLX twin."""
    if backend.name == "mlx":
        from clbench.backends.mlx import cms_adapter
    else:
        from clbench.modeling import cms_adapter
    return cms_adapter


@register("cms")
class CMS(TieredStrategy):
    """Continuum Memory System: levels that change once per chunk of C_l steps (eqs. 70–71)."""

    family = "nested learning"

    Options = CMSOptions
    schedule_field = "chunk_sizes"

    @classmethod
    def options_from(cls, data, where):
        if isinstance(data, dict) and data.get("update") == "local":
            rest = {k: v for k, v in data.items() if k not in ("form", "update")}
            raise ConfigError(f"{where}.update", "the local δ-rule is its own strategy now: write "
                              f"{{name: cms_local, options: {json.dumps(rest)}}} (same label; form and update "
                              "left out)", ["outer"])
        options = super().options_from(data, where)
        o = options
        if o.form == "adapter" and o.mode == "full":
            raise ConfigError(f"{where}.mode", "the adapter form trains only the CMS chain; use mode: lora "
                              "(its LoRA fields are unused) or form: lora")
        if o.adapter_hidden < 1:
            raise ConfigError(f"{where}.adapter_hidden", f"must be positive, got {o.adapter_hidden}")
        return options

    @classmethod
    def check_plan(cls, options, plan: RunPlan, where: str) -> None:
        check_chunks_complete(options.chunk_sizes, "steps", options.clock, plan, where)

    # --- set-up ------------------------------------------------------------------------------------
    @classmethod
    def supported_backends(cls, options):
        return ("torch",) if options.form == "memory" else cls.backends  # the memory is torch code so far

    @classmethod
    def options_for_backend(cls, backend):
        return {"form": "adapter"} if backend in cls.backends else {}

    def make_updater(self):
        return TieredUpdater(self.options.chunk_sizes, "accumulate",
                             reduce="mean" if self.options.scale == "mean" else "sum", clock=self.options.clock,
                             clip=self.options.clip, steps_per_task=self.train.steps_per_task)

    def prepare_model(self, model):
        o = self.options
        if o.form == "adapter":
            return adapter_chain(self.backend).add_cms_adapters(model, len(o.chunk_sizes), o.adapter_hidden)
        if o.form == "memory":
            from clbench.modeling import cms_memory

            for m in cms_memory.add_memory(model, len(o.chunk_sizes), o.adapter_hidden):
                m.requires_grad_(True)
            return model
        return super().prepare_model(model)

    def initial_tier_map(self, model):
        if self.options.form == "adapter":
            return adapter_chain(self.backend).adapter_levels(model)
        if self.options.form == "memory":
            from clbench.modeling.cms_memory import memory_levels

            return memory_levels(model)
        return tiers_by_depth(self.trainable, len(self.options.chunk_sizes), self.options.order)

    def param_groups(self):
        if self.options.scale != "inverse_chunk":
            return super().param_groups()
        # level l's learning rate is lr / C_l (a level that never updates has no step to scale)
        return self.tier_param_groups([1 if c == NEVER else c for c in self.options.chunk_sizes])

    def diagnostics(self):
        o = self.options
        return {**super().diagnostics(), "cms": {"form": o.form, "update": o.update, "clock": o.clock}}
