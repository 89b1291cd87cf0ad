"""The one tier mechanism (torch): which parameters update at a step, and what happens to the others.

Every nested-learning strategy (``layer_tiers``, ``importance_tiers``, ``cms``, and ``surprise`` when it
wraps one of them) runs its updates through a :class:`TieredUpdater`; they differ only in *how* the tier
map is built. The schedule itself is the pure :func:`clbench.train.tiers.schedule.active_tiers`: tier ``i`` updates at
task step ``s`` (counted from 1) iff ``s % frequencies[i] == 0``.

What an inactive tier does at a step (``semantics``):

* ``skip`` (seed 000): its gradient is neither applied nor *computed*. :meth:`TieredUpdater.before_step`
  switches ``requires_grad`` off for inactive tiers, so autograd builds no weight gradients for them and,
  when the shallow blocks are inactive, the backward pass stops early. Nothing of theirs reaches the
  optimizer.
* ``accumulate`` (CMS, eq. 71): its gradient is computed every step and summed in the updater's own
  buffers (the runner zeroes ``.grad`` after every step), and the chunk's sum is applied at the tier's
  next active step — divided by the number of steps summed when ``reduce="mean"``. A partial chunk left
  at the end of a task is discarded: eq. 71 changes a level only at multiples of its chunk size.

Optimizer state belongs to the updates actually made: an inactive parameter's ``.grad`` is ``None`` when
``optimizer.step()`` runs, and torch's Adam/AdamW skip such parameters entirely — their moments and step
count do not advance and decoupled weight decay does not touch them. Gradient clipping is the global
norm over exactly the gradients applied this step (the rule of :func:`clbench.train.strategy.clip_grad_norm`,
after an accumulated chunk's reduction). Gradient
accumulation, warm-up and learning-rate schedules stay the trainer's; the updater only chooses what
``optimizer.step()`` sees.

Diagnostics (``Strategy.diagnostics()["tiers"]``, stored by the runner in ``eval/after_<t>.json`` and
in the checkpoint metadata) — one JSON object per trained task::

    {"semantics": "skip" | "accumulate", "reduce": "sum" | "mean", "frequencies": [1, 2, 4],
     "task_steps": 200,                 # optimizer steps taken in this task
     "tasks_finished": 2,               # trained tasks finished so far (this one included)
     "tier_map_ready": true,            # false only while importance tiers are still warming up
     "tiers": [{"tier": 0, "frequency": 1,
                "parameters": 28, "elements": 81920,  # tensors and scalars in the tier
                "updates": 200,                       # optimizer updates this task
                "updates_total": 400,                 # ... over every task so far
                "steps": [1, 2, 3, ...],              # task steps at which it updated
                "grad_norms": [0.41, ...],            # L2 norm of the gradient applied at each of those
                                                      # steps (before clipping), aligned with "steps"
                "drift": 0.123}, ...]}                # L2 distance of the tier from its task-start value

Updates are recorded per parameter and grouped into tiers when the diagnostics are read, so steps taken
before a tier map existed (importance tiers' warm-up, when every parameter updates) are attributed to
the tiers they were later ranked into.

What needs no array library — the tier map, the schedule, chunk counts, the update records and the
JSON above — is ``clbench.train.tiers.state``, shared with the MLX updater; this module holds the torch part.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from clbench.config.options import opt
from clbench.errors import ConfigError
from clbench.modeling.lora import LoraOptions, prepare_lora_or_full
from clbench.train.strategy import LossOutput, Strategy, UpdateContext
from clbench.train.tiers.schedule import check_frequencies
from clbench.train.tiers.state import TierHooks, TierState

Semantics = Literal["skip", "accumulate"]
Reduce = Literal["sum", "mean"]
BLOCK_LIST = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)$")


def decoder_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of ``model`` in depth order (the first ``ModuleList`` named like
    ``layers``/``h``/``blocks``, as in Llama, GPT-2, Qwen, Mistral, also inside a peft wrapper)."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) and BLOCK_LIST.search(name):
            return list(module)
    raise ValueError(f"{type(model).__name__} has no list of transformer blocks named layers/h/blocks")


class TieredUpdater(TierState):
    """Applies the gradients of the tiers active at a step; skips or accumulates the others.

    Call order per task: :meth:`begin_task`, then per step :meth:`before_step` (before the forward pass)
    and :meth:`apply` (instead of ``optimizer.step()``), then :meth:`end_task`. :meth:`attach` and
    :meth:`set_map` say which parameters exist and which tier each belongs to. The tier map, schedule,
    chunk counts, records and diagnostics are ``clbench.train.tiers.state.TierState``'s (shared with MLX).
    """

    def __init__(self, frequencies: Sequence[int], semantics: Semantics = "skip", reduce: Reduce = "sum"):
        super().__init__(frequencies, semantics, reduce)
        self.params: dict[str, torch.nn.Parameter] = {}
        self._start: dict[str, torch.Tensor] | None = None

    # --- what is tiered --------------------------------------------------------------------------
    def attach(self, params: Mapping[str, torch.nn.Parameter]) -> None:
        self.params = dict(params)
        self.sizes = {n: p.numel() for n, p in self.params.items()}
        self.tier_map = None

    # --- per task --------------------------------------------------------------------------------
    def begin_task(self) -> None:
        """Reset per-task counters and buffers, snapshot parameters (for drift), make all trainable."""
        super().begin_task()
        self._start = {n: p.detach().clone() for n, p in self.params.items()}
        self._set_requires_grad(lambda name: True)

    def end_task(self) -> None:
        """Fold this task's counts into the totals; restore ``requires_grad``; drop partial chunks."""
        super().end_task()
        self._set_requires_grad(lambda name: True)

    # --- per step --------------------------------------------------------------------------------
    def before_step(self, step: int, all_active: bool = False) -> None:
        """Decide the active tiers of ``step``; under ``skip`` switch off gradients of the others.

        ``all_active`` (or no tier map yet) makes every parameter update, e.g. during a warm-up.
        """
        super().before_step(step, all_active)
        if self.semantics == "skip":
            self._set_requires_grad(self.is_active)

    @property
    def computes_gradients(self) -> bool:
        """False when no gradient at all is needed this step (``skip`` with no active tier)."""
        return self.semantics == "accumulate" or any(self.is_active(n) for n in self.params)

    def apply(self, ctx: UpdateContext) -> int:
        """Clip and apply the active tiers' gradients; returns how many elements were updated."""
        divisor = self.chunk_divisors()
        applied, index = [], []
        for i, (name, p) in enumerate(self.params.items()):
            tier = self.tier_map[name] if self.tier_map is not None else 0
            if not self.is_active(name):
                if self.semantics == "accumulate" and p.grad is not None:
                    buf = self.buffers.get(name)
                    if buf is None:
                        self.buffers[name] = p.grad  # take the tensor over: the trainer drops .grad next
                    else:
                        buf.add_(p.grad)
                p.grad = None  # never reaches the optimizer: no moment, step count or weight decay change
                continue
            pending = self.buffers.pop(name, None)
            if pending is not None:
                p.grad = pending if p.grad is None else pending.add_(p.grad)
            if p.grad is None:
                continue
            if self.reduce == "mean" and divisor[tier] > 1:
                p.grad.div_(divisor[tier])
            applied.append(p)
            index.append(i)
        norms = self._record(applied, index)
        if ctx.max_grad_norm and applied:
            # clbench.train.strategy.clip_grad_norm's rule — the global norm over exactly what updates — reusing
            # the per-parameter norms just recorded instead of computing them a second time
            torch.nn.utils.clip_grads_with_norm_(applied, ctx.max_grad_norm, torch.linalg.vector_norm(norms))
        ctx.optimizer.step()
        return sum(p.numel() for p in applied)

    # --- bookkeeping -----------------------------------------------------------------------------
    def _set_requires_grad(self, on) -> None:
        for name, p in self.params.items():
            p.requires_grad_(bool(on(name)))

    def _record(self, applied: list[torch.nn.Parameter], index: list[int]) -> torch.Tensor | None:
        """Log which parameters update at this step and their gradient norms; returns the norms."""
        n = len(self.params)
        updated = np.zeros(n, dtype=bool)
        sq = torch.zeros(n)
        norms = None
        if applied:
            updated[index] = True
            # torch._foreach_norm is what clip_grad_norm_ uses itself: one call for all tensors
            norms = torch.stack(torch._foreach_norm([p.grad for p in applied]))
            sq[index] = norms.float().pow(2).cpu()
        self.log_step(updated, sq)
        return norms

    def grad_norms(self, rows: np.ndarray, positions: list[int]) -> list[float]:
        sq = torch.stack(self.task_sq_norms) if self.task_steps else torch.zeros(0, len(self.params))
        return [round(v, 6) for v in sq[torch.as_tensor(rows)][:, positions].sum(1).sqrt().tolist()]

    def drift(self, tier: int) -> float | None:
        """L2 distance of the tier's parameters from their values at the start of the task."""
        if self._start is None:
            return None
        total = sum(float((self.params[n].detach() - self._start[n]).float().pow(2).sum()) for n in self.members(tier))
        return total ** 0.5


@dataclass(frozen=True)
class TierOptions(LoraOptions):
    """Options shared by the tier strategies (``layer_tiers``, ``importance_tiers``)."""

    frequencies: tuple[int, ...] = opt([1, 2, 4], "tier i updates at task steps that are multiples of frequencies[i]")
    inactive: Literal["skip", "accumulate"] = opt("skip", "skip: an inactive tier's gradient is neither computed nor applied; "
                                                          "accumulate: summed and applied at the tier's next active step (as cms)")


class TieredStrategy(TierHooks, Strategy):
    """Base of the nested-learning strategies: LoRA (or full) parameters updated through a
    :class:`TieredUpdater`. A subclass says how parameters are placed in tiers (:meth:`initial_tier_map`);
    the hooks that only call the updater are ``clbench.train.tiers.state.TierHooks`` (shared with MLX)."""

    Options = TierOptions

    def make_updater(self) -> TieredUpdater:
        return TieredUpdater(self.options.frequencies, self.options.inactive)

    @classmethod
    def options_from(cls, data: dict, where: str):
        options = super().options_from(data, where)
        try:
            check_frequencies(getattr(options, cls.schedule_field))
        except ValueError as exc:
            raise ConfigError(f"{where}.{cls.schedule_field}", str(exc)) from None
        return options

    # --- hooks -----------------------------------------------------------------------------------
    def prepare_model(self, model):
        return prepare_lora_or_full(model, self.options)

    def mark_trainable(self, model) -> None:
        super().mark_trainable(model)
        self.updater.attach(self.trainable)
        tier_map = self.initial_tier_map(model)
        if tier_map is not None:
            self.updater.set_map(tier_map)

    def loss(self, model, batch) -> LossOutput:
        if self.updater.computes_gradients:
            return super().loss(model, batch)
        # No tier updates at this step (e.g. frequencies [2, 4] at step 1): forward only, for the log;
        # a leaf that requires grad keeps the trainer's backward call valid and makes it a no-op.
        with torch.no_grad():
            out = super().loss(model, batch)
        return LossOutput(out.loss.detach().requires_grad_(), out.logs)
