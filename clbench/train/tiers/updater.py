"""The one tier mechanism, for every backend: which parameters update at a step, and what happens to the others.

Every nested-learning strategy (``layer_tiers``, ``importance_tiers``, ``cms``, and ``surprise`` when it
wraps one of them) runs its updates through a :class:`TieredUpdater`; they differ only in *how* the tier
map is built. The schedule itself is the pure :func:`clbench.train.tiers.schedule.active_tiers`: tier ``i`` updates at
task step ``s`` (counted from 1) iff ``s % frequencies[i] == 0``.

What an inactive tier does at a step (``semantics``):

* ``skip`` (seed 000): its gradient is neither applied nor *computed*. :meth:`TieredUpdater.grad_names`
  names only the active tiers' parameters, and the backend freezes the others for the step (torch:
  ``requires_grad`` off, so autograd builds no weight gradient for them and, when the shallow blocks
  are inactive, the backward pass stops early; MLX: frozen for ``nn.value_and_grad``). Nothing of
  theirs reaches the optimizer.
* ``accumulate`` (CMS, eq. 71): its gradient is computed every step and summed in the updater's own
  buffers, and the chunk's sum is applied at the tier's next active step — divided by the number of
  steps summed when ``reduce="mean"``. A partial chunk left at the end of a task is discarded: eq. 71
  changes a level only at multiples of its chunk size.

Optimizer state belongs to the updates actually made: the backend applies exactly the gradients it is
given (``ctx.apply``), so an inactive parameter's moments and step count do not advance and decoupled
weight decay does not touch it (torch's AdamW skips a parameter whose ``.grad`` is ``None``; MLX keeps
one optimizer per tensor, ``clbench.backends.mlx.optim``).

Gradient clipping (``clip``, after an accumulated chunk's reduction, at ``train.max_grad_norm``):
``per_tier`` (default) clips each tier's applied gradient by its own L2 norm, so a tier's update does not
depend on whether another tier — or another tier's accumulated chunk sum — applies at the same step;
``global`` clips the norm over everything applied this step together (the rule the untiered strategies
use), which couples the tiers: tier 0 is clipped harder at the steps where the slow tiers also apply.
With one tier active the two are the same. Gradient
accumulation, warm-up and learning-rate schedules stay the loop's; the updater only chooses what the
optimizer sees.

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

What needs no array library at all — the tier map, the schedule, chunk counts, the update records and
the JSON above — is ``clbench.train.tiers.state``; this module adds the gradient arithmetic, through the
strategy's backend (``clbench.backends.base.Backend``) and, for the norms that clip a tier and fill its
diagnostics, through the twin modules ``norms_torch`` / ``norms_mlx`` next to this one (:func:`tier_norms`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from clbench.config.options import opt
from clbench.config.periods import Period
from clbench.errors import ConfigError
from clbench.modeling.lora import LoraOptions
from clbench.train.strategy import Strategy
from clbench.train.tiers.schedule import check_frequencies, tier_members
from clbench.train.tiers.state import TierHooks, TierState
from clbench.train.types import UpdateContext

Semantics = Literal["skip", "accumulate"]
Reduce = Literal["sum", "mean"]
Clip = Literal["per_tier", "global"]


class TieredUpdater(TierState):
    """Applies the gradients of the tiers active at a step; skips or accumulates the others.

    Call order per task: :meth:`begin_task`, then per step :meth:`before_step` (before the forward pass),
    :meth:`grad_names` and :meth:`apply` (instead of a plain ``ctx.apply``), then :meth:`end_task`.
    :meth:`attach` and :meth:`set_map` say which parameters exist and which tier each belongs to. The
    tier map, schedule, chunk counts, records and diagnostics are ``clbench.train.tiers.state.TierState``'s.
    """

    def __init__(self, frequencies: Sequence[int | str], semantics: Semantics = "skip", reduce: Reduce = "sum",
                 clock: str = "task", clip: Clip = "per_tier", steps_per_task: int | None = None):
        super().__init__(frequencies, semantics, reduce, clock, steps_per_task)
        if clip not in ("per_tier", "global"):
            raise ValueError(f"clip must be per_tier or global, got {clip!r}")
        self.clip = clip
        self.backend = None
        self.norms = None  # the norms_<backend> module
        self.model = None
        self._start: dict | None = None

    # --- what is tiered --------------------------------------------------------------------------
    def attach(self, backend, model, params: Mapping) -> None:
        self.backend, self.model = backend, model
        self.norms = tier_norms(backend.name)
        self.sizes = {n: int(_numel(p)) for n, p in params.items()}
        self.position = {n: i for i, n in enumerate(self.sizes)}
        self.tier_map = None

    def _params(self) -> dict:
        return self.backend.parameters(self.model, self.sizes)

    # --- per task --------------------------------------------------------------------------------
    def begin_task(self) -> None:
        """Reset per-task counters and buffers and snapshot the parameters (for drift)."""
        super().begin_task()
        self._start = self.backend.snapshot(self._params())

    # --- per step --------------------------------------------------------------------------------
    def grad_names(self) -> list[str] | None:
        """Parameters whose gradient this step needs (None: all): the active tiers' under ``skip``, all
        under ``accumulate``; never a tier that never updates."""
        if self.tier_map is None or self.all_active or (self.semantics == "accumulate" and not self.never):
            return None
        return [n for n in self.sizes if not self.grad_free(n)]

    def apply(self, ctx: UpdateContext) -> int:
        """Clip and apply the active tiers' gradients (plus their accumulated chunks); returns elements."""
        backend = self.backend
        unknown = [n for n in ctx.grads if n not in self.sizes]
        if unknown:  # e.g. a nested gradient tree filtered by flat names (seed 002's critical bug)
            raise KeyError(f"gradients for parameters outside the tier map: {unknown[:5]}")
        self.start_update(ctx.global_step)
        divisor = self.chunk_divisors()
        applied: dict = {}
        sums: list[tuple[str, object, object]] = []  # (name, buffer, gradient) added in one call below
        for name in self.sizes:
            tier = self.tier_map[name] if self.tier_map is not None else 0
            g = ctx.grads.get(name)
            if not self.is_active(name):
                if self.semantics == "accumulate" and g is not None:
                    buf = self.buffers.get(name)
                    if buf is None:
                        self.buffers[name] = g
                    else:
                        sums.append((name, buf, g))
                continue
            pending = self.buffers.pop(name, None)
            if pending is not None and g is not None:
                sums.append((name, pending, g))
                g = pending
            if g is None and pending is None:
                continue
            applied[name] = pending if g is None else g
        if sums:  # buffer += gradient for every pair at once (the sums land in the buffers' storage)
            for (name, _, _), total in zip(sums, backend.accumulate_all([b for _, b, _ in sums],
                                                                        [g for _, _, g in sums])):
                if name in applied:
                    applied[name] = total
                else:
                    self.buffers[name] = total
        if self.reduce == "mean":
            for name, g in applied.items():
                tier = self.tier_map[name] if self.tier_map is not None else 0
                if divisor[tier] > 1:
                    applied[name] = backend.divide(g, divisor[tier])
        backend.materialize(list(self.buffers.values()) + list(applied.values()))
        norms = self._record(applied)
        if self.clip == "global" or not ctx.max_grad_norm or not applied:
            return ctx.apply(applied, None if norms is None else self.norms.total_norm(norms))
        tier_of = [self.tier_map[n] if self.tier_map is not None else 0 for n in applied]
        names = list(applied)
        for tier in sorted(set(tier_of)):  # each tier by its own norm (from the norms just recorded), no global clip
            idx = [k for k, t in enumerate(tier_of) if t == tier]
            part = {names[k]: applied[names[k]] for k in idx}
            applied.update(backend.clip_global_norm(part, ctx.max_grad_norm, self.norms.subset_norm(norms, idx)))
        return ctx.apply(applied, clip=False)

    def buffers_state(self) -> dict:
        """The pending chunk sums as CPU torch tensors (what ``strategy_state.pt`` can hold)."""
        import torch

        self.backend.materialize(list(self.buffers.values()))
        return {n: (b.detach().to("cpu", copy=True) if isinstance(b, torch.Tensor)
                    else torch.from_numpy(np.array(b, dtype=np.float32)))
                for n, b in self.buffers.items()}

    def load_buffers_state(self, tensors: dict) -> None:
        params = self._params()
        self.buffers = {n: self.backend.from_torch(t, like=params[n]) for n, t in tensors.items()}

    # --- bookkeeping -----------------------------------------------------------------------------
    def _record(self, applied: Mapping):
        """Log which parameters update at this step and their gradient norms; returns the norms."""
        index = [self.position[n] for n in applied]
        updated = np.zeros(len(self.sizes), dtype=bool)
        sq_row = self.norms.zeros(len(self.sizes))
        norms = None
        if applied:
            norms, sq = self.norms.grad_norms(list(applied.values()))
            updated[index] = True
            sq_row[index] = sq
        self.log_step(updated, sq_row)
        return norms

    def grad_norms(self, rows, positions: list[int]) -> list[float]:
        return self.norms.rows_norms(self.task_sq_norms, len(self.sizes), rows, positions)

    def drift(self, tier: int) -> float | None:
        """L2 distance of the tier's parameters from their values at the start of the task."""
        if self._start is None:
            return None
        now = self._params()
        return sum(self.norms.sq_distance(now[n], self._start[n]) for n in self.members(tier)) ** 0.5


def tier_norms(backend_name: str):
    """The norms module for ``backend_name``'s arrays (imported only for that backend, so a torch run never
    imports MLX)."""
    if backend_name == "mlx":
        from clbench.train.tiers import norms_mlx

        return norms_mlx
    if backend_name == "torch":
        from clbench.train.tiers import norms_torch

        return norms_torch
    raise ValueError(f"no tier norms for backend {backend_name!r}")


def _numel(p) -> int:
    return p.numel() if hasattr(p, "numel") else p.size


@dataclass(frozen=True)
class TierOptions(LoraOptions):
    """Options shared by the tier strategies (``layer_tiers``, ``importance_tiers``)."""

    frequencies: tuple[Period, ...] = opt([1, 2, 4], "tier i updates at steps that are multiples of frequencies[i] "
                                                    "(never: the tier is frozen)")
    inactive: Literal["skip", "accumulate"] = opt("skip", "skip: an inactive tier's gradient is neither computed nor applied; "
                                                          "accumulate: summed and applied at the tier's next active step (as cms)")
    clip: Literal["per_tier", "global"] = opt("per_tier", "per_tier: clip each tier's gradient by its own norm; global: "
                                                          "one norm over the tiers applied at a step (couples them)")
    clock: Literal["task", "global"] = opt("task", "task: steps count from 1 in every task; global: over the whole "
                                                   "stream (a period longer than a task still updates)")


class TieredStrategy(TierHooks, Strategy):
    """Base of the nested-learning strategies: LoRA (or full) parameters updated through a
    :class:`TieredUpdater`. A subclass says how parameters are placed in tiers (:meth:`initial_tier_map`);
    the hooks that only call the updater are ``clbench.train.tiers.state.TierHooks``."""

    Options = TierOptions

    def make_updater(self) -> TieredUpdater:
        return TieredUpdater(self.options.frequencies, self.options.inactive, clock=self.options.clock,
                             clip=self.options.clip, steps_per_task=self.train.steps_per_task)

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
        return self.backend.prepare_lora_or_full(model, self.options)

    def mark_trainable(self, model) -> None:
        super().mark_trainable(model)
        self.updater.attach(self.backend, model, self.trainable)
        tier_map = self.initial_tier_map(model)
        if tier_map is not None:
            self.updater.set_map(tier_map)

    def tier_param_groups(self, divisors: Sequence[float]) -> list[tuple[list[str], float]]:
        """One optimizer group per tier, its learning rate divided by ``divisors[tier]``."""
        members = tier_members(self.updater.tier_map, self.updater.n_tiers)
        return [(names, d) for d, names in zip(divisors, members) if names]
