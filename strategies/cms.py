"""The Continuum Memory System (seed 004, eqs. 70–71): levels that change once per chunk, fast to slow.

Level l has chunk size C_l. Three forms, each named for what it is:

* ``memory`` — the paper's CMS as a memory (``clbench.modeling.cms_memory``): a chain of MLP levels
  ``x + MLP_l(LN(x))`` *beside* every block's feed-forward, zero-initialised (the pretrained model is
  unchanged until a level's first update), the pretrained weights frozen. How a level learns is
  ``update``:

  - ``outer``: from the main loss, its gradients summed over a chunk of ``C_l`` optimizer steps and
    applied at the chunk's end by the outer optimizer (eq. 71);
  - ``local``: by its own inner δ-rule inside the forward pass — at each chunk boundary (``chunk_unit``
    ``tokens``: positions along the sequence, the default for ``local``; or ``steps``) a step on
    ``½‖MLP_l(x) − sg(y − δ)‖²`` with δ = ∇_y L, later tokens seeing the new weights; the step is
    Titans' surprise-driven update (``local_lr``, ``local_momentum``, ``local_decay``), optionally
    gated by ``surprise_threshold`` (gate hits and misses per level in the diagnostics). The outer
    optimizer changes nothing. ``test_time_updates: true`` lets the memory learn from each probe
    batch's prompts during evaluation too (restored afterwards); false leaves every parameter bitwise
    unchanged by evaluation. Both are reported as separate rows of the grid.

* ``lora`` — *frequency tiers with accumulation*, not a memory: the LoRA (or, with ``mode: full``, all)
  parameters split by block depth (``order``) into levels that apply their summed gradients every C_l
  steps; ``layer_tiers`` with ``inactive: accumulate``, kept as the simplest reading of eq. 71;
* ``adapter`` — a chain of residual MLPs appended *after* every block's feed-forward output
  (``clbench.modeling.cms_adapter``), trained by the outer optimizer alone (an adapter, not a memory).

``clock`` — what the chunks count: ``global`` (default) counts over the whole stream, so a level slower
than a task still changes at its own period (seed 003's 1/16/256, the reimplementation's 1/4/32/128),
its partial chunk carried across task boundaries and stored with the checkpoint for a resume;
``task`` restarts at every task (the earlier behaviour). A chunk that cannot complete within the
stream (or, on the task clock, within a task) is refused before the run writes anything.

``scale`` (outer updates) — how a chunk's sum becomes an update:

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
from clbench.config.periods import NEVER, Period
from clbench.errors import ConfigError
from clbench.modeling.lora import LoraOptions
from clbench.train.registry import register
from clbench.train.tiers.schedule import tiers_by_depth
from clbench.train.tiers.updater import TieredStrategy, TieredUpdater
from clbench.train.types import LossOutput, RunPlan


@dataclass(frozen=True)
class CMSOptions(LoraOptions):
    form: Literal["lora", "adapter", "memory"] = opt(
        "lora", "lora: frequency tiers with accumulation over LoRA by depth; adapter: MLP chain after each FFN "
                "(outer optimizer); memory: the paper's CMS, a chain beside each FFN with its own update rule")
    chunk_sizes: tuple[Period, ...] = opt([1, 2, 4], "C_l per level, fast to slow: level l updates once every C_l "
                                                     "steps (or tokens); never: the level stays as it starts")
    clock: Literal["global", "task"] = opt("global", "global: chunks count over the whole stream (carried across "
                                                     "tasks and resume); task: restart at every task")
    chunk_unit: Literal["steps", "tokens"] = opt("steps", "what a chunk counts: optimizer steps, or (update: "
                                                          "local) sequence positions inside the forward pass")
    update: Literal["outer", "local"] = opt("outer", "memory form: outer (main-loss gradients, eq. 71) or local "
                                                     "(the inner δ-rule inside the forward pass)")
    local_lr: float = opt(1.0, "local: θ, the step size on the δ-rule's chunk gradient", ge=0)
    local_momentum: float = opt(0.0, "local: η, Titans' momentum on past surprise", ge=0, le=1)
    local_decay: float = opt(0.0, "local: α, Titans' forgetting gate W ← (1 − α) W + S", ge=0, le=1)
    surprise_threshold: float = opt(0.0, "local: a chunk whose surprise ‖∇_W‖ is below this changes nothing; "
                                         "0 = no gate", ge=0)
    test_time_updates: bool = opt(False, "local: the memory also learns from each probe batch's prompts "
                                         "during evaluation (restored afterwards)")
    scale: Literal["none", "inverse_chunk", "mean"] = opt(
        "none", "none: apply the chunk's gradient sum (eq. 71); inverse_chunk: sum with lr / C_l (seed 003); "
                "mean: the chunk's mean gradient")
    order: Literal["shallow_fast", "deep_fast"] = opt("shallow_fast", "lora form: which blocks form level 0")
    adapter_hidden: int = opt(32, "adapter and memory forms: hidden width of each level's MLP")
    clip: Literal["per_tier", "global"] = opt("per_tier", "per_tier: clip each level's gradient by its own norm; "
                                                          "global: one norm over the levels applied at a step")


@register("cms")
class CMS(TieredStrategy):
    """Continuum Memory System: levels that change once per chunk of C_l steps or tokens (eqs. 70–71)."""

    family = "nested learning"

    Options = CMSOptions
    schedule_field = "chunk_sizes"

    @classmethod
    def options_from(cls, data, where):
        options = super().options_from(data, where)
        o = options
        if o.form == "adapter" and o.mode == "full":
            raise ConfigError(f"{where}.mode", "the adapter form trains only the CMS chain; use mode: lora "
                              "(its LoRA fields are unused) or form: lora")
        if o.adapter_hidden < 1:
            raise ConfigError(f"{where}.adapter_hidden", f"must be positive, got {o.adapter_hidden}")
        if o.update == "local" and o.form != "memory":
            raise ConfigError(f"{where}.update", f"the local rule belongs to the memory form, not form: {o.form}")
        if o.chunk_unit == "tokens" and o.update != "local":
            raise ConfigError(f"{where}.chunk_unit", "outer updates happen once per optimizer step: count chunks "
                              "in steps, or use update: local", ["steps"])
        if o.test_time_updates and o.update != "local":
            raise ConfigError(f"{where}.test_time_updates", "only the local rule learns at test time")
        if o.update == "local" and o.scale != "none":
            raise ConfigError(f"{where}.scale", "the local rule takes its own step (local_lr); scale is for outer")
        return options

    @classmethod
    def check_plan(cls, options, plan: RunPlan, where: str) -> None:
        """Refuse a level whose chunk cannot complete: more steps (or tokens) than the stream — or, on the
        task clock, a task — has. Tokens are bounded by ``max_length`` positions per forward pass."""
        o = options
        steps = plan.total_steps if o.clock == "global" else plan.steps_per_task
        horizon = steps if o.chunk_unit == "steps" else steps * plan.grad_accum * plan.max_length
        span = "the stream" if o.clock == "global" else "a task (clock: task)"
        unit = "steps" if o.chunk_unit == "steps" else f"tokens (at most {plan.max_length} per forward pass)"
        for level, c in enumerate(o.chunk_sizes):
            if c != NEVER and c > horizon:
                raise ConfigError(f"{where}.options.chunk_sizes[{level}]",
                                  f"a chunk of {c} {o.chunk_unit} never completes: {span} has at most "
                                  f"{horizon} {unit}, so level {level} would never update")

    # --- set-up ------------------------------------------------------------------------------------
    @property
    def local(self) -> bool:
        return self.options.update == "local"

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
            return self.backend.add_cms_adapters(model, len(o.chunk_sizes), o.adapter_hidden)
        if o.form == "memory":
            from clbench.modeling import cms_memory

            self.memories = cms_memory.add_memory(model, len(o.chunk_sizes), o.adapter_hidden)
            self.model = model  # the local rule's memorising pass runs it again
            if self.local:
                rule = cms_memory.LocalRule(tuple(o.chunk_sizes), o.chunk_unit, o.local_lr, o.local_momentum,
                                            o.local_decay, o.surprise_threshold)
                for m in self.memories:
                    m.rule = rule
            else:
                for m in self.memories:
                    m.requires_grad_(True)
            return model
        return super().prepare_model(model)

    def mark_trainable(self, model) -> None:
        if not self.local:
            return super().mark_trainable(model)
        # the memory's weights are what the run trains and checkpoints, but only the local rule changes
        # them: they never require a gradient of the main loss
        from clbench.modeling.cms_memory import memory_levels

        names = memory_levels(model)
        self.trainable = {n: p for n, p in model.named_parameters() if n in names}
        self.pending: list[tuple[dict, list]] = []  # (micro-batch, its teach signals) until the update

    def initial_tier_map(self, model):
        if self.options.form == "adapter":
            return self.backend.cms_levels(model)
        if self.options.form == "memory":
            from clbench.modeling.cms_memory import memory_levels

            return memory_levels(model)
        return tiers_by_depth(self.trainable, len(self.options.chunk_sizes), self.options.order)

    def param_groups(self):
        if self.options.scale != "inverse_chunk":
            return super().param_groups()
        # level l's learning rate is lr / C_l (a level that never updates has no step to scale)
        return self.tier_param_groups([1 if c == NEVER else c for c in self.options.chunk_sizes])

    # --- the local rule: teach signals from the ordinary pass, learning in a second one -----------
    def before_task(self, task, model):
        if not self.local:
            return super().before_task(task, model)
        for m in self.memories:
            if self.options.clock == "task":
                m.reset_clock()
            m.reset_stats()
        self.step_updates = [0] * len(self.options.chunk_sizes)

    def before_step(self, step):
        if not self.local:
            return super().before_step(step)

    def grad_names(self, step):
        return None if self.local else super().grad_names(step)

    def loss(self, model, batch):
        if not self.local:
            return super().loss(model, batch)
        from clbench.modeling import cms_memory

        with cms_memory.capturing(self.memories):
            loss = self.backend.lm_loss(model, batch)
            outputs = [m.captured[0] for m in self.memories]
        deltas: list = [None] * len(outputs)
        k = self.train.grad_accum  # the step backpropagates loss / (its micro-batches)

        def keep(i):
            def hook(grad):
                deltas[i] = grad.detach() * k
            return hook

        for i, y in enumerate(outputs):
            y.register_hook(keep(i))
        self.pending.append(({"input_ids": batch["input_ids"], "attention_mask": batch.get("attention_mask")},
                             deltas))
        return LossOutput(loss)

    def apply_update(self, ctx):
        if not self.local:
            return super().apply_update(ctx)
        from clbench.modeling import cms_memory

        before = [list(m.updates) for m in self.memories]
        for batch, deltas in self.pending:
            if any(d is None for d in deltas):
                raise RuntimeError("cms local: a micro-batch's loss was not backpropagated before the update")
            with self.backend.compute():  # the memorising pass in the run's precision, as the training pass
                cms_memory.memorize(self.model, self.memories, batch, deltas)
        self.pending = []
        ctx.apply({})  # no gradient: changes nothing, keeps the optimizer/schedule order valid
        step = ctx.global_step if self.options.clock == "global" else ctx.step
        for m in self.memories:
            m.end_step(step)
        sizes = [sum(p.numel() for p in level.parameters()) for level in self.memories[0].levels]
        self.step_updates = [sum(m.updates[i] - b[i] for m, b in zip(self.memories, before))
                             for i in range(len(sizes))]
        return sum(n * size for n, size in zip(self.step_updates, sizes))

    def after_task(self, task, model):
        if not self.local:
            return super().after_task(task, model)

    def probe_view(self, view):
        if self.local and self.options.test_time_updates:
            from clbench.eval.memory_view import TestTimeMemoryView

            return TestTimeMemoryView(view, self.memories)
        return view

    def step_log(self):
        if not self.local:
            return super().step_log()
        return {"memory_updates": list(self.step_updates)}  # level updates (over all blocks) in this step

    def diagnostics(self):
        o = self.options
        if not self.local:
            return {**super().diagnostics(), "cms": {"form": o.form, "update": o.update, "clock": o.clock}}
        first = self.memories[0]
        levels = []
        for i, c in enumerate(o.chunk_sizes):
            surprise = [s for m in self.memories for s in m.surprise[i]]
            levels.append({"level": i, "chunk": c, "unit": o.chunk_unit,
                           "updates": first.updates[i],  # per block (all blocks share the clock)
                           "gate_hits": sum(m.updates[i] for m in self.memories),
                           "gate_misses": sum(m.gate_misses[i] for m in self.memories),
                           "surprise_mean": sum(surprise) / len(surprise) if surprise else None,
                           "at": first.update_positions[i]})
        return {"cms": {"form": o.form, "update": "local", "clock": o.clock, "chunk_unit": o.chunk_unit,
                        "test_time_updates": o.test_time_updates, "tokens_seen": first.tokens_seen,
                        "blocks": len(self.memories), "levels": levels}}

    def checkpoint_metadata(self):
        if not self.local:
            return super().checkpoint_metadata()
        return {"cms": {"form": "memory", "update": "local", "chunk_sizes": list(self.options.chunk_sizes),
                        "test_time_updates": self.options.test_time_updates}}

    def state_dict(self):
        if not self.local:
            return super().state_dict()
        return {"memory": [m.memory_state() for m in self.memories]}

    def load_state_dict(self, state):
        if not self.local:
            return super().load_state_dict(state)
        if state.get("memory") is not None and self.options.clock == "global":
            for m, st in zip(self.memories, state["memory"], strict=True):
                m.load_memory_state(st)

