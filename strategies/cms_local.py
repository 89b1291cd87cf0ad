"""The Continuum Memory System learning by its own δ-rule (seed 004; Titans' surprise-driven step).

The memory is ``cms``'s ``form: memory`` (``clbench.modeling.cms_memory``): a chain of MLP levels
``x + MLP_l(LN(x))`` beside every block's feed-forward, zero-initialised, the pretrained weights frozen.
Here no level learns from the outer optimizer. Each training step:

1. the ordinary forward/backward pass computes the main loss; the gradient at each memory's output is
   kept as its *teach signal* δ = ∇_y L (:meth:`CMSLocal.loss`);
2. at the update, the step's micro-batches run forward once more with their teach signals, and every
   level takes a step on ``½‖MLP_l(x) − sg(y − δ)‖²`` at each of its chunk boundaries — ``chunk_unit``
   ``tokens``: every C_l positions along the sequence, later tokens seeing the new weights; ``steps``: at
   the end of every C_l-th step's pass (:meth:`CMSLocal.apply_update`). The step is Titans' (``local_lr``
   θ, ``local_momentum`` η, ``local_decay`` α: ``S ← η·S − θ·g``, ``W ← (1 − α)·W + S``), optionally
   gated by ``surprise_threshold`` (gate hits and misses per level in the diagnostics).

``test_time_updates: true`` lets the memory learn from each probe batch's prompts during evaluation too
(``clbench.eval.memory_view``; restored afterwards); false leaves every parameter bitwise unchanged by
evaluation. ``clock``: ``global`` (default) counts chunks over the whole stream, carried across tasks and
stored for a resume; ``task`` restarts at every task. A chunk that cannot complete is refused before the
run writes anything. How the rule rides on the training step: ``clbench.train.local_memory``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from clbench.config.options import check_bounds, opt
from clbench.config.periods import Period
from clbench.errors import ConfigError
from clbench.train.registry import register
from clbench.train.strategy import Strategy
from clbench.train.tiers.schedule import check_chunks_complete, check_frequencies
from clbench.train.types import LossOutput, RunPlan


@dataclass(frozen=True)
class CMSLocalOptions:
    # the defaults are those cms's local rule had, so an old {name: cms, options: {form: memory, update: local,
    # ...}} row is the same run as {name: cms_local, options: {...}} with form and update left out
    chunk_sizes: tuple[Period, ...] = opt([1, 2, 4], "C_l per level, fast to slow: level l steps once every C_l "
                                                     "chunk_units; never: the level stays as it starts")
    chunk_unit: Literal["steps", "tokens"] = opt("steps", "what a chunk counts: optimizer steps, or sequence "
                                                          "positions inside the forward pass")
    clock: Literal["global", "task"] = opt("global", "global: chunks count over the whole stream (carried across "
                                                     "tasks and resume); task: restart at every task")
    local_lr: float = opt(1.0, "θ, the step size on the δ-rule's chunk gradient", ge=0)
    local_momentum: float = opt(0.0, "η, Titans' momentum on past surprise", ge=0, le=1)
    local_decay: float = opt(0.0, "α, Titans' forgetting gate W ← (1 − α) W + S", ge=0, le=1)
    surprise_threshold: float = opt(0.0, "a chunk whose surprise ‖∇_W‖ is below this changes nothing; 0 = no gate",
                                    ge=0)
    test_time_updates: bool = opt(False, "the memory also learns from each probe batch's prompts during "
                                         "evaluation (restored afterwards)")
    adapter_hidden: int = opt(32, "hidden width of each level's MLP", ge=1)

    def __post_init__(self):
        check_bounds(self)


@register("cms_local")
class CMSLocal(Strategy):
    """CMS memory learning by its own δ-rule inside the forward pass (Titans' step), optionally at test time."""

    family = "nested learning"
    backends = ("torch",)  # the memory is torch code so far
    in_all = False  # a form of cms's memory: grids name it in rows of its own (make bench's cms-local)

    Options = CMSLocalOptions

    @classmethod
    def options_from(cls, data, where):
        options = super().options_from(data, where)
        try:
            check_frequencies(options.chunk_sizes)
        except ValueError as exc:
            raise ConfigError(f"{where}.chunk_sizes", str(exc)) from None
        if options.test_time_updates and options.chunk_unit == "steps":
            # with step chunks a level closes its chunk only at the end of a training step (end_step), which
            # evaluation never takes: the memory would learn nothing from the probes while paying for the
            # teach-signal passes (a run measured about 6x the evaluation time with every score unchanged)
            raise ConfigError(f"{where}.test_time_updates", "test-time updates need chunk_unit: tokens (levels "
                              "step inside the forward pass); with chunk_unit: steps no level ever steps during "
                              "evaluation. Allowed: test_time_updates: false, or chunk_unit: tokens")
        return options

    @classmethod
    def check_plan(cls, options, plan: RunPlan, where: str) -> None:
        check_chunks_complete(options.chunk_sizes, options.chunk_unit, options.clock, plan, where)

    # --- set-up: the memory beside every FFN, its weights changed by the rule alone -------------------
    def prepare_model(self, model):
        from clbench.modeling import cms_memory
        from clbench.train.local_memory import LocalMemory

        o = self.options
        memories = cms_memory.add_memory(model, len(o.chunk_sizes), o.adapter_hidden)
        rule = cms_memory.LocalRule(tuple(o.chunk_sizes), o.chunk_unit, o.local_lr, o.local_momentum,
                                    o.local_decay, o.surprise_threshold)
        for m in memories:
            m.rule = rule
        self.memory = LocalMemory(model, memories, self.backend, o.clock)
        return model

    @property
    def memories(self):
        return self.memory.memories

    def mark_trainable(self, model) -> None:
        # what the run trains and checkpoints; never a gradient of the main loss
        from clbench.modeling.cms_memory import memory_levels

        names = memory_levels(model)
        self.trainable = {n: p for n, p in model.named_parameters() if n in names}

    # --- the algorithm: teach signals from the ordinary pass, learning in a second one --------------
    def before_task(self, task, model):
        self.memory.begin_task()

    def loss(self, model, batch):
        return LossOutput(self.memory.teach_signal_loss(model, batch))

    def apply_update(self, ctx):
        return self.memory.memorize_pending(ctx)

    def probe_view(self, view):
        if not self.options.test_time_updates:
            return view
        from clbench.eval.memory_view import TestTimeMemoryView

        return TestTimeMemoryView(view, self.memories)

    # --- what a run records ----------------------------------------------------------------------------
    def step_log(self):
        return {"memory_updates": list(self.memory.step_updates)}  # level updates (over all blocks) in this step

    def diagnostics(self):
        o, first = self.options, self.memories[0]
        return {"cms": {"form": "memory", "update": "local", "clock": o.clock, "chunk_unit": o.chunk_unit,
                        "test_time_updates": o.test_time_updates, "tokens_seen": first.tokens_seen,
                        "blocks": len(self.memories),
                        "levels": self.memory.level_diagnostics(o.chunk_sizes, o.chunk_unit)}}

    def checkpoint_metadata(self):
        return {"cms": {"form": "memory", "update": "local", "chunk_sizes": list(self.options.chunk_sizes),
                        "test_time_updates": self.options.test_time_updates}}

    def state_dict(self):
        return self.memory.state_dict()

    def load_state_dict(self, state):
        self.memory.load_state_dict(state)
