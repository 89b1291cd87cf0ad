"""The strategy plugin API: what a continual-learning method may change, and when it is asked.

A strategy is one class in one file under ``strategies/`` with ``@register("name")`` and a frozen
``Options`` dataclass, written once for every backend: whatever touches arrays goes through
``self.backend`` (``clbench.backends.base.Backend``: gradients as ``{name: value}``, model surgery, one
step). The runner (``clbench.run.one_run``) owns the loop and every counter; it calls these hooks, in
this order, for one run::

    Strategy.check_plan(options, RunPlan(...), where)  # when the grid is planned, before anything is written
    s = Strategy(options, seed=seed, train=train_config, backend=backend)
    model = s.prepare_model(model)                  # once: add LoRA/adapters, choose trainable params
    s.mark_trainable(model)                         # fixes s.trainable: {name: parameter}
    for task in stream:
        if task is learned by the base model:       # e.g. 'general' in the default stream
            s.observe_pretrained(task)              # optional: remember its data (replay, joint)
            continue
        s.before_task(task, model)                  # snapshot, reset per-task state
        optimizer = backend.make_optimizer(s, ...)  # over s.param_groups() (kept across tasks if configured)
        examples = s.training_examples(task)        # what to train on (replay mixes, joint takes the union)
        for step in 1..steps_per_task:              # steps count from 1 within a task
            s.before_step(step)                     # e.g. decide the active tiers
            keep = s.grad_names(step)               # parameters that need a gradient (None: all)
            for each micro-batch:
                out = s.loss(model, batch)          # main loss (+ penalties / auxiliary terms)
            n = s.apply_update(ctx)                 # ctx.grads {name: gradient}; ctx.apply(grads) steps
        s.after_task(task, model)                   # e.g. EWC Fisher, new anchors
        checkpoint(s.checkpoint_tensors(model), s.state_dict(), s.diagnostics())
        evaluate(s.probe_view(view of model))       # e.g. a memory that learns at test time

The step itself — micro-batches, gradient accumulation, the call of ``apply_update`` — is
``clbench.train.step.optimizer_step``, the one place every loop (the runner's, the digits cross-check's,
``clbench perf``'s, the tests') takes a step.

Strategies see only the current task's *training* records (:class:`TaskView`); probes never reach them.
They never count tasks or steps themselves: ``task.index`` and ``step`` come from the runner.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import ClassVar

from clbench.config.experiment import TrainConfig
from clbench.train.types import LossOutput, RunPlan, TaskView, UpdateContext

__all__ = ["LossOutput", "RunPlan", "Strategy", "TaskView", "UpdateContext"]


class Strategy:
    """Base class: plain sequential fine-tuning of whatever ``prepare_model`` leaves trainable.

    Subclasses override only the hooks their algorithm changes. Set ``Options`` to a frozen dataclass
    (fields made with :func:`clbench.config.options.opt` carry their help text into ``clbench list``).
    ``backends`` names the backends the algorithm can run on; the registry refuses the others before
    anything runs.
    """

    @dataclass(frozen=True)
    class Options:
        pass

    name: str = "base"
    trains: bool = True  # False: the runner skips training (e.g. the 'frozen' lower bound)
    requires_trainable: bool = True  # False: no trainable parameter is acceptable
    # True (with trains False): the model evaluated after every task is the base model unchanged (no probe_view),
    # so the runner copies the base row instead of scoring the same model again (frozen: 3 rows of ~25 s on SmolLM2)
    scores_as_base: bool = False
    family: str = "other"  # how reports group it: "nested learning", "baselines" or "references"
    # False: ``strategies: [all]`` leaves it out — a variant that grids name in their own rows (cms_local, the
    # CMS memory under its own rule, as cms's memory form is), so adding it changed no grid that says ``all``
    in_all: ClassVar[bool] = True
    backends: ClassVar[tuple[str, ...]] = ("torch", "mlx")

    def __init__(self, options=None, *, seed: int = 0, train: TrainConfig | None = None, backend):
        """``backend``: the caller's (``clbench.backends.get_backend``); ``train`` sits below the backends and
        never picks one itself."""
        self.options = options if options is not None else self.Options()
        self.seed = seed
        self.train = train or TrainConfig()
        self.backend = backend
        self.trainable: dict = {}  # name -> parameter, fixed by mark_trainable

    @property
    def trainable_parameters(self) -> int:
        """Elements in the trainable parameters (``metrics.json``'s ``trainable_parameters``)."""
        return sum(math.prod(p.shape) for p in self.trainable.values())

    @classmethod
    def options_from(cls, data: dict, where: str):
        from clbench.config.options import from_dict

        return from_dict(cls.Options, data, where)

    @classmethod
    def supported_backends(cls, options) -> tuple[str, ...]:
        """The backends this strategy runs on with ``options`` (default: :attr:`backends`)."""
        return cls.backends

    @classmethod
    def options_for_backend(cls, backend: str) -> dict:
        """Option values with which the strategy runs on ``backend`` when some of its options keep it off
        it (named in the refusal); ``{}``: none needed, or none that would do."""
        return {}

    @classmethod
    def describe(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    # --- set-up -------------------------------------------------------------------------------------
    def prepare_model(self, model):
        """Wrap or modify the model once, before the first task; return the model to train."""
        return model

    def mark_trainable(self, model) -> None:
        """Record the parameters that are trainable now as the strategy's trainable set."""
        self.trainable = self.backend.trainable(model)
        if not self.trainable and self.requires_trainable:
            raise RuntimeError(f"strategy {self.name!r} left no trainable parameter in the model")

    def param_groups(self) -> list[tuple[list[str], float | None]]:
        """Optimizer groups as ``(parameter names, learning-rate divisor or None)`` (default: one group)."""
        return [(list(self.trainable), None)]

    def params(self, model) -> dict:
        """Current values of the trainable parameters (inside :meth:`loss`: the ones being differentiated)."""
        return self.backend.parameters(model, self.trainable)

    @classmethod
    def check_plan(cls, options, plan: RunPlan, where: str) -> None:
        """Raise ``ConfigError`` for ``options`` a run of ``plan`` cannot honour (e.g. a chunk that never
        completes). Called for every row when the grid is planned, before anything is written; ``where``
        is the row in the experiment file, ``strategies[<label>]``, for the error to name."""

    def probe_view(self, view):
        """The view the probes after a task ask (default ``view`` itself; a test-time-learning memory
        wraps it). The reference and base rows always use the plain view."""
        return view

    # --- per task ----------------------------------------------------------------------------------
    def observe_pretrained(self, task: TaskView) -> None:
        """A task the base model already learned (pretraining); nothing to train."""

    def training_examples(self, task: TaskView) -> list[dict]:
        """The records to train on for ``task`` (default: the task's own)."""
        return list(task.examples)

    def before_task(self, task: TaskView, model) -> None:
        """Called before the first step of a trained task."""

    def after_task(self, task: TaskView, model) -> None:
        """Called after the last step of a trained task, before evaluation and the checkpoint."""

    # --- per step ----------------------------------------------------------------------------------
    def before_step(self, step: int) -> None:
        """Called before the forward pass of optimizer step ``step`` (1-based within the task)."""

    def grad_names(self, step: int) -> Collection[str] | None:
        """Parameters whose gradient this step needs (the others are frozen for the step: neither
        computed nor applied); ``None`` means every trainable parameter."""
        return None

    def loss(self, model, batch: dict) -> LossOutput:
        """The loss to backpropagate for one micro-batch (default: the causal-LM loss)."""
        return LossOutput(self.backend.lm_loss(model, batch))

    def apply_update(self, ctx: UpdateContext) -> int:
        """Turn this step's gradients into parameter changes; return how many elements were updated."""
        return ctx.apply(ctx.grads)

    def step_log(self) -> dict:
        """Extra fields for this step's line in the training log (e.g. active tiers)."""
        return {}

    # --- persistence and diagnostics ---------------------------------------------------------------
    def checkpoint_tensors(self, model) -> dict:
        """What a task checkpoint stores: the trainable parameters only (the adapter, not the base)."""
        return self.backend.parameters(model, self.trainable)

    def load_checkpoint_tensors(self, model, tensors: dict) -> None:
        mismatch = sorted(set(self.trainable) ^ set(tensors))
        if mismatch:
            raise RuntimeError(f"checkpoint does not match the model's trainable parameters: {mismatch[:5]}")
        self.backend.load_parameters(model, tensors)

    def state_dict(self) -> dict:
        """Strategy memory needed to resume after a task (buffers, Fisher, anchors); torch-saveable."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def diagnostics(self) -> dict:
        """JSON-able statistics stored with each task's results (tier counts, drift, penalties)."""
        return {}

    def checkpoint_metadata(self) -> dict:
        """JSON-able metadata stored inside the task checkpoint (e.g. the tier map)."""
        return {}
