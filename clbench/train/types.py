"""The values that pass between the loop and a strategy: the task it may see, a batch's loss, a step's update.

Plain data with no backend behind it, so every layer (the strategies, the backends' surprise tricks, the
plugins) can use them without importing anything else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TaskView:
    """What a strategy may know about a task: its place in the stream and its training records."""

    index: int  # position in the stream (0-based), pretrained tasks included
    name: str
    examples: tuple[dict, ...]  # training records: {"text"} or {"prompt", "completion"}
    encode: object = field(repr=False, default=None)  # callable(record) -> clbench.data.encoding.Encoded
    pretrained: bool = False


@dataclass(frozen=True)
class RunPlan:
    """What a run will do, known before anything is written (for ``Strategy.check_plan``)."""

    steps_per_task: int
    trained_tasks: int  # tasks of the stream that train (pretrained ones excluded)
    grad_accum: int
    max_length: int  # token budget of one example: no forward pass is longer
    reset_optimizer: bool = True  # a new optimizer state at every task

    @property
    def total_steps(self) -> int:
        return self.steps_per_task * self.trained_tasks


@dataclass
class LossOutput:
    """A batch's loss to backpropagate (a backend scalar), plus named scalars for the training log
    (numbers, or backend scalars such as the penalty term itself: only their value is logged)."""

    loss: Any
    logs: dict[str, Any] = field(default_factory=dict)


@dataclass
class UpdateContext:
    """What :meth:`Strategy.apply_update` may use: this step's gradients, where we are, and how to apply."""

    step: int  # 1-based optimizer step within the current task
    global_step: int  # 1-based optimizer step over the whole run
    grads: dict[str, Any]  # {parameter name: gradient}, averaged over micro-batches, before clipping
    lr: float  # the scheduled learning rate of this step
    max_grad_norm: float
    apply_fn: Callable = field(repr=False, default=None)  # (grads, total_norm[, clip]) -> elements updated

    def apply(self, grads: dict[str, Any], total_norm=None, clip: bool = True) -> int:
        """Clip ``grads`` to the global norm ``max_norm`` and take the optimizer step on exactly them;
        parameters without an entry do not change. Returns the elements updated. ``clip=False``: the
        caller has clipped them already (per tier), so the step applies them as they are."""
        if not clip:
            return self.apply_fn(grads, None, False)
        return self.apply_fn(grads, total_norm)


@dataclass(frozen=True)
class SurpriseBlocks:
    """What a backend's surprise trick (``Backend.surprise``) is told by the surprise plugin: the chosen
    blocks, their indices in the model (for messages), λ per block and the target mode."""

    blocks: tuple  # the chosen transformer blocks, in the order of the plugin's ``layers``
    index: tuple[int, ...]  # each block's index in the model
    weights: tuple[float, ...]  # λ per block
    target: str  # "detached" or "full"


@dataclass
class SurpriseTerms:
    """What a backend's surprise trick returns for one micro-batch, by position in
    :attr:`SurpriseBlocks.blocks`: each block's auxiliary term ``λ·mean((y − ∇_y L)²)`` (a number or a backend
    scalar) and, where the backend measures it, ``rms(∇_y L)/rms(y)``. The one-pass trick computes them
    inside the backward pass, so they are complete once the step's backward has run; a block whose output
    got no gradient at this step has no entry."""

    aux: dict[int, Any] = field(default_factory=dict)
    ratio: dict[int, float] = field(default_factory=dict)

    def add(self, i: int, term, ratio: float | None = None) -> None:
        self.aux[i] = self.aux[i] + term if i in self.aux else term
        if ratio is not None:
            self.ratio[i] = max(ratio, self.ratio.get(i, 0.0))
