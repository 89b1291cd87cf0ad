"""The strategy plugin API: what a continual-learning method may change, and when it is asked.

A strategy is one class in one file under ``strategies/`` with ``@register("name")`` and a frozen
``Options`` dataclass. The runner (``clbench.run.one_run``) owns the loop and every counter; it calls these
hooks, in this order, for one run::

    s = Strategy(options, seed=seed, train=train_config)
    model = s.prepare_model(model)                  # once: add LoRA/adapters, choose trainable params
    for task in stream:
        if task is learned by the base model:       # e.g. 'general' in the default stream
            s.observe_pretrained(task)              # optional: remember its data (replay, joint)
            continue
        s.before_task(task, model)                  # snapshot, reset per-task state
        optimizer = AdamW(s.param_groups(model))    # built by the runner (kept across tasks if configured)
        examples = s.training_examples(task)        # what to train on (replay mixes, joint takes the union)
        for step in 1..steps_per_task:              # steps count from 1 within a task
            s.before_step(step)                     # e.g. switch off requires_grad of inactive tiers
            for each micro-batch:
                out = s.loss(model, batch)          # main loss (+ penalties / auxiliary terms)
                (out.loss / grad_accum).backward()
            n = s.apply_update(UpdateContext(...))  # clip + optimizer.step(); tiers/CMS choose what
            optimizer.zero_grad(); scheduler.step()
        s.after_task(task, model)                   # e.g. EWC Fisher, new anchors
        checkpoint(s.checkpoint_tensors(model), s.state_dict(), s.diagnostics())

Strategies see only the current task's *training* records (:class:`TaskView`); probes never reach them.
They never count tasks or steps themselves: ``task.position`` and ``step`` come from the runner.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from clbench.config.experiment import TrainConfig


@dataclass(frozen=True)
class TaskView:
    """What a strategy may know about a task: its place in the stream and its training records."""

    index: int  # position in the stream (0-based), pretrained tasks included
    name: str
    examples: tuple[dict, ...]  # training records: {"text"} or {"prompt", "completion"}
    encode: object = field(repr=False, default=None)  # callable(record) -> clbench.data.encoding.Encoded
    pretrained: bool = False


@dataclass
class LossOutput:
    """A batch's loss to backpropagate, plus named scalars for the training log."""

    loss: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)


@dataclass
class UpdateContext:
    """What :meth:`Strategy.apply_update` may use: the optimizer and where we are."""

    step: int  # 1-based optimizer step within the current task
    global_step: int  # 1-based optimizer step over the whole run
    optimizer: torch.optim.Optimizer
    max_grad_norm: float


class StrategyBase:
    """What a strategy is on every backend, free of any array library: construction, the task-level
    hooks and their defaults, plain-data persistence and diagnostics. :class:`Strategy` (torch, below)
    and ``clbench.backends.mlx.strategy.MLXStrategy`` add ``Options`` and the model, loss and update
    hooks."""

    name: str = "base"
    trains: bool = True  # False: the runner skips training (e.g. the 'frozen' lower bound)
    requires_trainable: bool = True  # False: no trainable parameter is acceptable

    def __init__(self, options=None, *, seed: int = 0, train: TrainConfig | None = None):
        self.options = options if options is not None else self.Options()
        self.seed = seed
        self.train = train or TrainConfig()
        self.trainable: dict = {}  # name -> parameter, fixed by mark_trainable

    @property
    def trainable_parameters(self) -> int:
        """Elements in the trainable parameters (``metrics.json``'s ``trainable_parameters``)."""
        return sum(math.prod(p.shape) for p in self.trainable.values())

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

    def step_log(self) -> dict:
        """Extra fields for this step's line in the training log (e.g. active tiers)."""
        return {}

    # --- persistence and diagnostics ---------------------------------------------------------------
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

    @classmethod
    def describe(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


class Strategy(StrategyBase):
    """Base class: plain sequential fine-tuning of whatever ``prepare_model`` leaves trainable.

    Subclasses override only the hooks their algorithm changes. Set ``Options`` to a frozen dataclass
    (fields made with :func:`clbench.config.options.opt` carry their help text into ``clbench list``).
    """

    @dataclass(frozen=True)
    class Options:
        pass

    trainable: dict[str, torch.nn.Parameter]

    # --- set-up -------------------------------------------------------------------------------------
    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Wrap or modify the model once, before the first task; return the model to train."""
        return model

    def param_groups(self, model: torch.nn.Module) -> list[dict]:
        """Optimizer parameter groups (default: one group of every trainable parameter)."""
        return [{"params": list(self.trainable.values())}]

    # --- per step ----------------------------------------------------------------------------------
    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> LossOutput:
        """The loss to backpropagate for one micro-batch (default: the causal-LM loss)."""
        return LossOutput(model(**batch).loss)

    def apply_update(self, ctx: UpdateContext) -> int:
        """Apply the accumulated gradients; return how many parameter elements were updated."""
        params = [p for p in self.trainable.values() if p.grad is not None]
        clip_grad_norm(params, ctx.max_grad_norm)
        ctx.optimizer.step()
        return sum(p.numel() for p in params)

    # --- persistence -------------------------------------------------------------------------------
    def checkpoint_tensors(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """What a task checkpoint stores: the trainable parameters only (the adapter, not the base)."""
        return {n: p.detach() for n, p in self.trainable.items()}

    def load_checkpoint_tensors(self, model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.trainable) ^ set(tensors))
        if missing:
            raise RuntimeError(f"checkpoint does not match the model's trainable parameters: {missing[:5]}")
        with torch.no_grad():
            for n, p in self.trainable.items():
                p.copy_(tensors[n].to(p.device, p.dtype))

    # --- helpers for subclasses --------------------------------------------------------------------
    def mark_trainable(self, model: torch.nn.Module) -> None:
        """Record the parameters that require grad now as the strategy's trainable set."""
        self.trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if not self.trainable and self.requires_trainable:
            raise RuntimeError(f"strategy {self.name!r} left no trainable parameter in the model")

    @classmethod
    def options_from(cls, data: dict, where: str):
        from clbench.config.options import from_dict

        return from_dict(cls.Options, data, where)


def clip_grad_norm(params: Iterable[torch.nn.Parameter], max_norm: float) -> float | None:
    """Clip the global gradient norm over ``params`` (only what updates this step); 0 disables it."""
    params = [p for p in params if p.grad is not None]
    if max_norm and params:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    return None
