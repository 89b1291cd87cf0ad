"""The one tier mechanism (torch): which parameters update at a step, and what happens to the others.

Every nested-learning strategy (``layer_tiers``, ``importance_tiers``, ``cms``, and ``surprise`` when it
wraps one of them) runs its updates through a :class:`TieredUpdater`; they differ only in *how* the tier
map is built. The schedule itself is the pure :func:`clbench.tiers.active_tiers`: tier ``i`` updates at
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
norm over exactly the gradients applied this step (the rule of :func:`clbench.strategy.clip_grad_norm`,
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
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from clbench.errors import ConfigError
from clbench.strategy import LossOutput, Strategy, UpdateContext
from clbench.tiers import active_tiers, check_frequencies, tier_members
from clbench.typed import opt
from strategies.sft import LoraOptions, prepare_lora_or_full

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


class TieredUpdater:
    """Applies the gradients of the tiers active at a step; skips or accumulates the others.

    Call order per task: :meth:`begin_task`, then per step :meth:`before_step` (before the forward pass)
    and :meth:`apply` (instead of ``optimizer.step()``), then :meth:`end_task`. :meth:`attach` and
    :meth:`set_map` say which parameters exist and which tier each belongs to.
    """

    def __init__(self, frequencies: Sequence[int], semantics: Semantics = "skip", reduce: Reduce = "sum"):
        self.frequencies = check_frequencies(frequencies)
        if semantics not in ("skip", "accumulate"):
            raise ValueError(f"semantics must be skip or accumulate, got {semantics!r}")
        if reduce not in ("sum", "mean"):
            raise ValueError(f"reduce must be sum or mean, got {reduce!r}")
        self.semantics, self.reduce = semantics, reduce
        self.params: dict[str, torch.nn.Parameter] = {}
        self.tier_map: dict[str, int] | None = None
        self.totals = [0] * self.n_tiers  # updates per tier over finished tasks
        self.tasks_finished = 0
        self.step = 0
        self.active: list[int] = list(range(self.n_tiers))
        self._start: dict[str, torch.Tensor] | None = None
        self._reset_task_log()

    @property
    def n_tiers(self) -> int:
        return len(self.frequencies)

    # --- what is tiered --------------------------------------------------------------------------
    def attach(self, params: Mapping[str, torch.nn.Parameter]) -> None:
        self.params = dict(params)
        self.tier_map = None

    def set_map(self, tier_map: Mapping[str, int]) -> None:
        """Place every attached parameter in a tier (a map missing one, or naming another, is an error)."""
        missing = [n for n in self.params if n not in tier_map]
        extra = [n for n in tier_map if n not in self.params]
        bad = [n for n, t in tier_map.items() if not (isinstance(t, int) and 0 <= t < self.n_tiers)]
        if missing or extra or bad:
            raise ValueError(f"tier map does not fit the trainable parameters: missing {missing[:3]}, "
                             f"unknown {extra[:3]}, tier out of range 0..{self.n_tiers - 1} for {bad[:3]}")
        self.tier_map = {n: int(tier_map[n]) for n in self.params}
        empty = [t for t in range(self.n_tiers) if not self.members(t)]
        if empty:
            warnings.warn(f"tier(s) {empty} of {self.n_tiers} have no parameters (e.g. fewer blocks than tiers): "
                          "they never update", stacklevel=2)

    def members(self, tier: int) -> list[str]:
        return tier_members(self.tier_map or {}, self.n_tiers)[tier]

    def is_active(self, name: str) -> bool:
        return self.tier_map is None or self.tier_map[name] in self.active

    # --- per task --------------------------------------------------------------------------------
    def _reset_task_log(self) -> None:
        self._steps: list[int] = []
        self._updated: list[torch.Tensor] = []  # per step: bool[n_params], which parameters updated
        self._sq_norms: list[torch.Tensor] = []  # per step: float[n_params], squared applied-gradient norm
        self._buffers: dict[str, torch.Tensor] = {}
        self._pending = [0] * self.n_tiers  # steps summed in each tier's buffer so far
        self._task_open = False

    def begin_task(self) -> None:
        """Reset per-task counters and buffers, snapshot parameters (for drift), make all trainable."""
        self._reset_task_log()
        self._task_open = True
        self._start = {n: p.detach().clone() for n, p in self.params.items()}
        self._set_requires_grad(lambda name: True)

    def end_task(self) -> None:
        """Fold this task's counts into the totals; restore ``requires_grad``; drop partial chunks."""
        if self._task_open:
            for t, count in enumerate(self._task_counts()):
                self.totals[t] += count
            self.tasks_finished += 1
        self._task_open = False
        self._buffers = {}
        self._set_requires_grad(lambda name: True)

    # --- per step --------------------------------------------------------------------------------
    def before_step(self, step: int, all_active: bool = False) -> None:
        """Decide the active tiers of ``step``; under ``skip`` switch off gradients of the others.

        ``all_active`` (or no tier map yet) makes every parameter update, e.g. during a warm-up.
        """
        self.step = step
        if all_active or self.tier_map is None:
            self.active = list(range(self.n_tiers))
        else:
            self.active = active_tiers(step, self.frequencies)
        if self.semantics == "skip":
            self._set_requires_grad(self.is_active)

    @property
    def computes_gradients(self) -> bool:
        """False when no gradient at all is needed this step (``skip`` with no active tier)."""
        return self.semantics == "accumulate" or any(self.is_active(n) for n in self.params)

    def apply(self, ctx: UpdateContext) -> int:
        """Clip and apply the active tiers' gradients; returns how many elements were updated."""
        active = set(self.active)
        divisor = [1] * self.n_tiers
        for t in range(self.n_tiers):  # chunk bookkeeping, once per tier and step
            if t in active or self.tier_map is None:
                divisor[t], self._pending[t] = self._pending[t] + 1, 0
            else:
                self._pending[t] += 1
        applied, index = [], []
        for i, (name, p) in enumerate(self.params.items()):
            tier = self.tier_map[name] if self.tier_map is not None else 0
            if not self.is_active(name):
                if self.semantics == "accumulate" and p.grad is not None:
                    buf = self._buffers.get(name)
                    if buf is None:
                        self._buffers[name] = p.grad  # take the tensor over: the trainer drops .grad next
                    else:
                        buf.add_(p.grad)
                p.grad = None  # never reaches the optimizer: no moment, step count or weight decay change
                continue
            pending = self._buffers.pop(name, None)
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
            # clbench.strategy.clip_grad_norm's rule — the global norm over exactly what updates — reusing
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
        updated = torch.zeros(n, dtype=torch.bool)
        sq = torch.zeros(n)
        norms = None
        if applied:
            updated[index] = True
            # torch._foreach_norm is what clip_grad_norm_ uses itself: one call for all tensors
            norms = torch.stack(torch._foreach_norm([p.grad for p in applied]))
            sq[index] = norms.float().pow(2).cpu()
        self._steps.append(self.step)
        self._updated.append(updated)
        self._sq_norms.append(sq)
        return norms

    def _task_counts(self) -> list[int]:
        if self.tier_map is None or not self._steps:
            return [0] * self.n_tiers
        updated = torch.stack(self._updated)
        return [int(updated[:, self._index(t)].any(1).sum()) if self._index(t) else 0 for t in range(self.n_tiers)]

    def _index(self, tier: int) -> list[int]:
        return [i for i, n in enumerate(self.params) if self.tier_map[n] == tier]

    def drift(self, tier: int) -> float | None:
        """L2 distance of the tier's parameters from their values at the start of the task."""
        if self._start is None:
            return None
        total = sum(float((self.params[n].detach() - self._start[n]).float().pow(2).sum()) for n in self.members(tier))
        return total ** 0.5

    def diagnostics(self) -> dict:
        """The JSON object described in this module's docstring."""
        out = {"semantics": self.semantics, "reduce": self.reduce, "frequencies": list(self.frequencies),
               "task_steps": len(self._steps), "tasks_finished": self.tasks_finished,
               "tier_map_ready": self.tier_map is not None, "tiers": []}
        if self.tier_map is None:
            return out
        counts = self._task_counts()
        steps = torch.tensor(self._steps, dtype=torch.long)
        updated = torch.stack(self._updated) if self._steps else torch.zeros(0, len(self.params), dtype=torch.bool)
        sq = torch.stack(self._sq_norms) if self._steps else torch.zeros(0, len(self.params))
        for t, freq in enumerate(self.frequencies):
            idx = self._index(t)
            rows = updated[:, idx].any(1) if idx else torch.zeros(len(self._steps), dtype=torch.bool)
            out["tiers"].append({
                "tier": t, "frequency": freq, "parameters": len(idx),
                "elements": sum(self.params[n].numel() for n in self.members(t)),
                "updates": counts[t], "updates_total": self.totals[t] + (counts[t] if self._task_open else 0),
                "steps": steps[rows].tolist(),
                "grad_norms": [round(v, 6) for v in sq[rows][:, idx].sum(1).sqrt().tolist()],
                "drift": self.drift(t)})
        return out

    def metadata(self) -> dict:
        """The tier map and per-tier totals, for the checkpoint header."""
        return {"semantics": self.semantics, "reduce": self.reduce, "frequencies": list(self.frequencies),
                "map": dict(self.tier_map or {}), "updates_total": list(self.totals),
                "drift": [self.drift(t) for t in range(self.n_tiers)] if self.tier_map is not None else None}

    def state_dict(self) -> dict:
        return {"totals": list(self.totals), "tasks_finished": self.tasks_finished,
                "tier_map": dict(self.tier_map) if self.tier_map is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.totals = list(state["totals"])
        self.tasks_finished = int(state["tasks_finished"])
        if state.get("tier_map") is not None:
            self.set_map(state["tier_map"])


@dataclass(frozen=True)
class TierOptions(LoraOptions):
    """Options shared by the tier strategies (``layer_tiers``, ``importance_tiers``)."""

    frequencies: tuple[int, ...] = opt([1, 2, 4], "tier i updates at task steps that are multiples of frequencies[i]")
    inactive: Literal["skip", "accumulate"] = opt("skip", "skip: an inactive tier's gradient is neither computed nor applied; "
                                                          "accumulate: summed and applied at the tier's next active step (as cms)")


class TieredStrategy(Strategy):
    """Base of the nested-learning strategies: LoRA (or full) parameters updated through a
    :class:`TieredUpdater`. A subclass says how parameters are placed in tiers (:meth:`initial_tier_map`)."""

    Options = TierOptions
    schedule_field = "frequencies"  # the option holding the per-tier update periods

    def __init__(self, options=None, *, seed: int = 0, train=None):
        super().__init__(options, seed=seed, train=train)
        self.updater = self.make_updater()

    def make_updater(self) -> TieredUpdater:
        return TieredUpdater(self.options.frequencies, self.options.inactive)

    def initial_tier_map(self, model: torch.nn.Module) -> dict[str, int] | None:
        """The tier of every trainable parameter, or None when it is only known after training starts."""
        raise NotImplementedError

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

    def before_task(self, task, model) -> None:
        self.updater.begin_task()

    def before_step(self, step: int) -> None:
        self.updater.before_step(step)

    def loss(self, model, batch) -> LossOutput:
        if self.updater.computes_gradients:
            return super().loss(model, batch)
        # No tier updates at this step (e.g. frequencies [2, 4] at step 1): forward only, for the log;
        # a leaf that requires grad keeps the trainer's backward call valid and makes it a no-op.
        with torch.no_grad():
            out = super().loss(model, batch)
        return LossOutput(out.loss.detach().requires_grad_(), out.logs)

    def apply_update(self, ctx: UpdateContext) -> int:
        return self.updater.apply(ctx)

    def after_task(self, task, model) -> None:
        self.updater.end_task()

    def step_log(self) -> dict:
        return {"active_tiers": list(self.updater.active)}

    def diagnostics(self) -> dict:
        return {"tiers": self.updater.diagnostics()}

    def checkpoint_metadata(self) -> dict:
        return {"tiers": self.updater.metadata()}

    def state_dict(self) -> dict:
        return {"tiers": self.updater.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("tiers"):
            self.updater.load_state_dict(state["tiers"])
