"""One optimizer step, the one way every loop takes it: the runner's task loop (``clbench.train.loop``),
the digits cross-check, ``clbench perf`` and the tests.

``before_step`` → ``grad_names`` → the backend's forward and backward over the micro-batches (only the
kept parameters get gradients) → the divergence check → ``apply_update`` with the gradients as
``{name: value}``. A change to the step is a change to every caller at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from clbench.data.encoding import count_tokens, target_tokens
from clbench.errors import ConfigError, DivergenceError
from clbench.train.types import UpdateContext


@dataclass
class StepResult:
    """What one optimizer step reports to the step loop's log."""

    loss: float  # the main loss, averaged over micro-batches
    lr: float
    tokens: int
    updated: int  # parameter elements the update changed
    logs: dict[str, float]  # the strategy's named scalars, averaged over micro-batches


def check_finite(where: str, step: int, loss: float, batches: Sequence[dict] = ()) -> None:
    """Stop a diverged run before its update is applied (a user error: the learning rate or the data). A loss
    that is NaN because no record of the step kept a token to learn (``model.max_length`` too short for the
    prompts) says so, rather than blaming the learning rate."""
    if not math.isfinite(loss):
        if batches and all("labels" in b for b in batches) and not sum(target_tokens(b) for b in batches):
            raise ConfigError("model.max_length", f"loss is {loss} at {where} step {step} because no record of the "
                              "step keeps a token to learn within model.max_length tokens (their prompts fill it); "
                              "raise model.max_length")
        raise DivergenceError(f"loss is {loss} at {where} step {step}: training diverged; lower train.lr (or "
                              "check the data) and rerun under another experiment name (the finished tasks stay "
                              "in this run's directory)")


def optimizer_step(strategy, model, optimizer, batches: Sequence[dict], step: int, global_step: int, lr: float,
                   max_grad_norm: float, where: str = "task") -> StepResult:
    """Optimizer step ``step`` (1-based within the task; ``global_step`` over the run) on ``batches``
    (its micro-batches, averaged); ``lr`` is the scheduled learning rate the optimizer applies."""
    backend = strategy.backend
    strategy.before_step(step)
    keep = strategy.grad_names(step)
    loss, logs, grads = backend.forward_backward(model, strategy.trainable, strategy.loss, batches, keep)
    check_finite(where, step, loss, batches)

    def apply(applied, total_norm=None, clip=True):
        return backend.apply_gradients(optimizer, model, strategy.trainable, applied, lr,
                                      max_grad_norm if clip else 0.0, total_norm)

    updated = strategy.apply_update(UpdateContext(step, global_step, grads, lr, max_grad_norm, apply))
    backend.clear_gradients(strategy.trainable)
    tokens = sum(count_tokens(b) for b in batches) if batches and "attention_mask" in batches[0] else 0
    return StepResult(loss, lr, tokens, updated, logs)
