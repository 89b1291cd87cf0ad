"""The half of the tier mechanism that needs no arrays at all.

``clbench.train.tiers.updater`` (its docstring defines the semantics and the diagnostics JSON) adds to
:class:`TierState` what touches gradients and parameters, through the strategy's backend: accumulating
and applying them, their norms, the drift. What is here decides *which* tiers update and writes down
what happened:

* the tier map (``{name: tier}`` over the tiered tensors, checked against them) and the active tiers
  of a step (the pure :func:`clbench.train.tiers.schedule.active_tiers`; every tier before a map exists);
* the chunk bookkeeping of ``accumulate``: how many steps each tier's pending sum holds;
* the clock the schedule reads (``clock``): ``task`` — task steps, every task starts at step 1 and a
  partial chunk is dropped at the task's end; ``global`` — optimizer steps over the whole stream (the
  runner's ``global_step``), partial chunks carried across task boundaries and stored in
  :meth:`TierState.state_dict`, so a level with chunk C updates at global multiples of C, also after a
  resume. ``accumulate`` decides at :meth:`start_update`, when the gradients exist; ``skip`` must switch
  gradients off before the forward pass, so it counts the global step itself — the trained tasks
  finished × ``steps_per_task`` + the task step, what the runner counts — and :meth:`start_update`
  checks it against the runner's;
* periods of ``"never"`` (``clbench.config.periods.NEVER``): such a tier is never active, and its
  gradient is not even computed (also under ``accumulate``: a chunk that never closes sums nothing);
* per step, which tensors updated (the updater also stores their squared gradient norms), per task the
  update counts, over tasks their totals — and from these the diagnostics, checkpoint metadata and the
  resumable state.

:class:`TierHooks` is the strategy side: the hooks every tier strategy answers by one call of its
updater, on either backend.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from clbench.train.tiers.schedule import active_tiers, check_frequencies, never_tiers, tier_members


class TierState:
    """Tier map, schedule and update records of one tiered updater; a backend subclass applies the
    gradients and gives :meth:`grad_norms` and :meth:`drift`. Names and sizes of the tiered tensors are
    set by the subclass's ``attach`` (in :attr:`sizes`, in parameter order)."""

    def __init__(self, frequencies: Sequence[int | str], semantics: str = "skip", reduce: str = "sum",
                 clock: str = "task", steps_per_task: int | None = None):
        self.frequencies = check_frequencies(frequencies)
        if semantics not in ("skip", "accumulate"):
            raise ValueError(f"semantics must be skip or accumulate, got {semantics!r}")
        if reduce not in ("sum", "mean"):
            raise ValueError(f"reduce must be sum or mean, got {reduce!r}")
        if clock not in ("task", "global"):
            raise ValueError(f"clock must be task or global, got {clock!r}")
        if clock == "global" and semantics == "skip" and not steps_per_task:
            raise ValueError("skip on the global clock needs steps_per_task (it counts the global step before "
                             "the forward pass)")
        self.semantics, self.reduce, self.clock = semantics, reduce, clock
        self.steps_per_task = steps_per_task
        self.never = set(never_tiers(self.frequencies))
        self.all_active = False
        self.sizes: dict[str, int] = {}  # tiered tensor -> elements
        self.tier_map: dict[str, int] | None = None
        self.totals = [0] * self.n_tiers  # updates per tier over finished tasks
        self.tasks_finished = 0
        self.step = 0
        self.active: list[int] = list(range(self.n_tiers))
        self.reset_task_log()

    @property
    def n_tiers(self) -> int:
        return len(self.frequencies)

    # --- what is tiered --------------------------------------------------------------------------
    def set_map(self, tier_map: Mapping[str, int]) -> None:
        """Place every tiered tensor in a tier (a map missing one, or naming another, is an error)."""
        missing = [n for n in self.sizes if n not in tier_map]
        extra = [n for n in tier_map if n not in self.sizes]
        bad = [n for n, t in tier_map.items() if not (isinstance(t, int) and 0 <= t < self.n_tiers)]
        if missing or extra or bad:
            raise ValueError(f"tier map does not fit the trainable parameters: missing {missing[:3]}, "
                             f"unknown {extra[:3]}, tier out of range 0..{self.n_tiers - 1} for {bad[:3]}")
        self.tier_map = {n: int(tier_map[n]) for n in self.sizes}
        empty = [t for t in range(self.n_tiers) if not self.members(t)]
        if empty:
            warnings.warn(f"tier(s) {empty} of {self.n_tiers} have no parameters (e.g. fewer blocks than tiers): "
                          "they never update", stacklevel=2)

    def members(self, tier: int) -> list[str]:
        return tier_members(self.tier_map or {}, self.n_tiers)[tier]

    def is_active(self, name: str) -> bool:
        return self.tier_map is None or self.tier_map[name] in self.active

    def positions(self, tier: int) -> list[int]:
        """Positions (in :attr:`sizes` order) of the tier's tensors."""
        return [i for i, n in enumerate(self.sizes) if self.tier_map[n] == tier]

    # --- per task --------------------------------------------------------------------------------
    def reset_task_log(self, keep_chunks: bool = False) -> None:
        self.task_steps: list[int] = []
        self.task_updated: list[np.ndarray] = []  # per step: bool[n_tensors], which tensors updated
        self.task_sq_norms: list = []  # per step: the backend's float[n_tensors], squared applied-gradient norm
        if not keep_chunks:
            self.buffers: dict = {}  # accumulate: each inactive tensor's gradient sum, in the backend's arrays
            self.pending = [0] * self.n_tiers  # steps summed in each tier's buffer so far
        self.task_open = False

    def begin_task(self) -> None:
        """Reset per-task counters, and the chunk buffers unless the clock is global."""
        self.reset_task_log(keep_chunks=self.clock == "global")
        self.task_open = True

    def end_task(self) -> None:
        """Fold this task's counts into the totals; drop partial chunks (kept on the global clock)."""
        if self.task_open:
            for t, count in enumerate(self.task_counts()):
                self.totals[t] += count
            self.tasks_finished += 1
        self.task_open = False
        if self.clock == "task":
            self.buffers = {}
            self.pending = [0] * self.n_tiers

    # --- per step --------------------------------------------------------------------------------
    def before_step(self, step: int, all_active: bool = False) -> None:
        """Decide the active tiers of task step ``step`` (on the global clock under ``skip``: of the
        global step it is); ``all_active`` (or no tier map yet) makes every tensor update, e.g. during a
        warm-up."""
        self.step = step
        if self.clock == "global" and self.semantics == "skip":
            self.step = self.tasks_finished * self.steps_per_task + step
        self.all_active = all_active
        if all_active or self.tier_map is None:
            self.active = list(range(self.n_tiers))
        else:
            self.active = active_tiers(self.step, self.frequencies)

    def start_update(self, global_step: int) -> None:
        """Call at the start of applying a step: on the global clock, decide the active tiers from the
        stream-wide optimizer step (which the diagnostics then list as the step); under ``skip`` they
        were decided before the forward pass, from the step counted here, which must be the same."""
        if self.clock != "global":
            return
        if self.semantics == "skip":
            if global_step != self.step:
                raise RuntimeError(f"tier clock: global step {global_step} from the runner, but {self.step} counted "
                                   f"from {self.tasks_finished} finished tasks of {self.steps_per_task} steps")
            return
        self.step = global_step
        if not (self.all_active or self.tier_map is None):
            self.active = active_tiers(global_step, self.frequencies)

    def grad_free(self, name: str) -> bool:
        """Whether ``name``'s gradient is not needed this step: it is in an inactive tier and would be
        dropped (``skip``), or in a tier that never updates (its chunk never closes)."""
        if self.tier_map is None or self.all_active:
            return False
        tier = self.tier_map[name]
        return tier in self.never or (self.semantics == "skip" and tier not in self.active)

    def chunk_divisors(self) -> list[int]:
        """Call once per step before applying: per tier, how many steps the gradient it applies now
        sums (its pending chunk plus this step; 1 without accumulation); inactive tiers' chunks grow
        (not a tier that never updates: it sums nothing)."""
        active = set(self.active)
        divisor = [1] * self.n_tiers
        for t in range(self.n_tiers):
            if t in active or self.tier_map is None:
                divisor[t], self.pending[t] = self.pending[t] + 1, 0
            elif t not in self.never:
                self.pending[t] += 1
        return divisor

    def log_step(self, updated: np.ndarray, sq_norms) -> None:
        """Record this step: which tensors updated (bool per tensor) and their squared gradient norms."""
        self.task_steps.append(self.step)
        self.task_updated.append(updated)
        self.task_sq_norms.append(sq_norms)

    # --- what the backend gives ------------------------------------------------------------------
    def grad_norms(self, rows: np.ndarray, positions: list[int]) -> list[float]:
        """Per logged step selected by ``rows``, the L2 norm of the gradients applied to the tensors at
        ``positions`` (rounded to 6 digits)."""
        raise NotImplementedError

    def drift(self, tier: int) -> float | None:
        """L2 distance of the tier's tensors from their values at the start of the task."""
        raise NotImplementedError

    # --- bookkeeping -----------------------------------------------------------------------------
    def task_counts(self) -> list[int]:
        """Steps of this task at which each tier updated (any of its tensors)."""
        if self.tier_map is None or not self.task_steps:
            return [0] * self.n_tiers
        updated = np.stack(self.task_updated)
        return [int(updated[:, idx].any(1).sum()) if (idx := self.positions(t)) else 0 for t in range(self.n_tiers)]

    def diagnostics(self) -> dict:
        """The JSON object described in ``clbench.train.tiers.updater``'s docstring."""
        out = {"semantics": self.semantics, "reduce": self.reduce, "clock": self.clock,
               "frequencies": list(self.frequencies),
               "task_steps": len(self.task_steps), "tasks_finished": self.tasks_finished,
               "tier_map_ready": self.tier_map is not None, "tiers": []}
        if self.tier_map is None:
            return out
        counts = self.task_counts()
        steps = np.array(self.task_steps, dtype=int)
        updated = (np.stack(self.task_updated) if self.task_steps
                   else np.zeros((0, len(self.sizes)), dtype=bool))
        for t, freq in enumerate(self.frequencies):
            idx = self.positions(t)
            rows = updated[:, idx].any(1) if idx else np.zeros(len(self.task_steps), dtype=bool)
            out["tiers"].append({
                "tier": t, "frequency": freq, "parameters": len(idx),
                "elements": sum(self.sizes[n] for n in self.members(t)),
                "updates": counts[t], "updates_total": self.totals[t] + (counts[t] if self.task_open else 0),
                "steps": steps[rows].tolist(),
                "grad_norms": self.grad_norms(rows, idx),
                "drift": self.drift(t)})
        return out

    def metadata(self) -> dict:
        """The tier map and per-tier totals, for the checkpoint header."""
        return {"semantics": self.semantics, "reduce": self.reduce, "frequencies": list(self.frequencies),
                "map": dict(self.tier_map or {}), "updates_total": list(self.totals),
                "drift": [self.drift(t) for t in range(self.n_tiers)] if self.tier_map is not None else None}

    def state_dict(self) -> dict:
        out = {"totals": list(self.totals), "tasks_finished": self.tasks_finished,
               "tier_map": dict(self.tier_map) if self.tier_map is not None else None}
        if self.clock == "global":  # partial chunks continue after a resume
            out["chunks"] = {"pending": list(self.pending), "buffers": self.buffers_state()}
        return out

    def load_state_dict(self, state: dict) -> None:
        self.totals = list(state["totals"])
        self.tasks_finished = int(state["tasks_finished"])
        if state.get("tier_map") is not None:
            self.set_map(state["tier_map"])
        if self.clock == "global" and state.get("chunks") is not None:
            self.pending = list(state["chunks"]["pending"])
            self.load_buffers_state(state["chunks"]["buffers"])

    def buffers_state(self) -> dict:
        """The pending chunk sums as ``torch.save``-able tensors (the backend converts its arrays)."""
        raise NotImplementedError

    def load_buffers_state(self, tensors: dict) -> None:
        raise NotImplementedError


class TierHooks:
    """The hooks of a tier strategy, each one call of ``self.updater`` (the ``TieredUpdater`` from
    :meth:`make_updater`); mixed in before ``Strategy`` by ``clbench.train.tiers.updater.TieredStrategy``.
    A subclass says how tensors are placed in tiers (:meth:`initial_tier_map`)."""

    schedule_field = "frequencies"  # the option holding the per-tier update periods

    def __init__(self, options=None, **kw):
        super().__init__(options, **kw)
        self.updater = self.make_updater()

    def make_updater(self):
        raise NotImplementedError

    def initial_tier_map(self, model) -> dict[str, int] | None:
        """The tier of every trainable parameter, or None when it is only known after training starts."""
        raise NotImplementedError

    def before_task(self, task, model) -> None:
        self.updater.begin_task()

    def before_step(self, step: int) -> None:
        self.updater.before_step(step)

    def grad_names(self, step: int):
        return self.updater.grad_names()

    def apply_update(self, ctx) -> int:
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
