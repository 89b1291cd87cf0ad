"""The tier mechanism for MLX: ``clbench.tiered``'s semantics and diagnostics, with flattened gradients.

Everything a reader of results sees is the torch mechanism's (``clbench.tiered``, read its docstring):
the schedule (``clbench.tiers.active_tiers``, steps from 1), the two inactive-tier semantics, the
options (the torch strategies' own ``Options`` classes and validation), and the diagnostics JSON, so
reports draw tier timelines and drift for MLX runs unchanged. What differs is the wiring:

* gradients arrive as a flat ``{name: gradient}`` (the trainer flattens ``nn.value_and_grad``'s nested
  tree with ``tree_flatten``); :func:`tier_filter` picks the active tiers' entries and refuses names it
  does not know, so a nested tree can never be filtered down to nothing (seed 002's critical bug);
* ``skip``: an inactive tier is frozen for the step (``grad_names``), so its gradient is not computed,
  and not applied; with one optimizer per tensor (``.optim``) its Adam moments, step count and weight
  decay do not advance;
* ``accumulate``: every tier's gradient is computed and summed in this object's buffers; a tier applies
  its chunk at its active steps (divided by the steps summed when ``reduce="mean"``); a partial chunk at
  the end of a task is dropped, as in torch;
* the learning-rate factor of a tier (cms ``inverse_chunk``: 1/C_l) is a per-tensor ``lr_scale``, where
  torch uses parameter groups.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Mapping, Sequence

import mlx.core as mx
import numpy as np
from mlx import nn
from mlx.utils import tree_flatten

from clbench.backends.mlx.strategy import MLXStrategy, UpdateContext, clip_by_global_norm
from clbench.tiers import active_tiers, check_frequencies, tier_members


def tier_filter(grads: Mapping[str, mx.array], tier_map: Mapping[str, int],
                active: Collection[int]) -> dict[str, mx.array]:
    """``{name: gradient}`` of the tensors whose tier is in ``active``; ``grads`` must be flat."""
    unknown = [n for n in grads if n not in tier_map]
    if unknown:
        raise KeyError(f"gradients for parameters outside the tier map (is the gradient tree flattened?): "
                       f"{unknown[:5]}")
    return {n: g for n, g in grads.items() if tier_map[n] in active}


class TieredUpdater:
    """Which tensors update at a step, and what happens to the others (MLX twin of ``clbench.tiered``)."""

    def __init__(self, frequencies: Sequence[int], semantics: str = "skip", reduce: str = "sum",
                 lr_scale: Sequence[float] | None = None):
        self.frequencies = check_frequencies(frequencies)
        if semantics not in ("skip", "accumulate") or reduce not in ("sum", "mean"):
            raise ValueError(f"semantics must be skip/accumulate and reduce sum/mean, got {semantics!r}, {reduce!r}")
        self.semantics, self.reduce = semantics, reduce
        self.lr_scale = list(lr_scale) if lr_scale is not None else [1.0] * self.n_tiers
        self.model: nn.Module | None = None
        self.sizes: dict[str, int] = {}
        self.tier_map: dict[str, int] | None = None
        self.totals = [0] * self.n_tiers
        self.tasks_finished = 0
        self.active: list[int] = list(range(self.n_tiers))
        self.step = 0
        self._start: dict[str, mx.array] | None = None
        self._reset_task_log()

    @property
    def n_tiers(self) -> int:
        return len(self.frequencies)

    # --- what is tiered --------------------------------------------------------------------------
    def attach(self, model: nn.Module, trainable: Mapping[str, mx.array]) -> None:
        self.model, self.sizes, self.tier_map = model, {n: int(v.size) for n, v in trainable.items()}, None

    def set_map(self, tier_map: Mapping[str, int]) -> None:
        """Place every trainable tensor in a tier (a map missing one, or naming another, is an error)."""
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

    def _params(self) -> dict[str, mx.array]:
        params = dict(tree_flatten(self.model.parameters()))
        return {n: params[n] for n in self.sizes}

    # --- per task --------------------------------------------------------------------------------
    def _reset_task_log(self) -> None:
        self._steps: list[int] = []
        self._updated: list[np.ndarray] = []  # per step: bool[n], which tensors updated
        self._sq_norms: list[np.ndarray] = []  # per step: float[n], squared applied-gradient norms
        self._buffers: dict[str, mx.array] = {}
        self._pending = [0] * self.n_tiers
        self._task_open = False

    def begin_task(self) -> None:
        self._reset_task_log()
        self._task_open = True
        self._start = self._params()  # MLX arrays are immutable: keeping them is a snapshot

    def end_task(self) -> None:
        if self._task_open:
            for t, count in enumerate(self._task_counts()):
                self.totals[t] += count
            self.tasks_finished += 1
        self._task_open = False
        self._buffers = {}

    # --- per step --------------------------------------------------------------------------------
    def before_step(self, step: int, all_active: bool = False) -> None:
        self.step = step
        self.active = (list(range(self.n_tiers)) if all_active or self.tier_map is None
                       else active_tiers(step, self.frequencies))

    def grad_names(self) -> list[str] | None:
        """Tensors whose gradient this step needs: the active tiers' under ``skip``; all (None) otherwise."""
        if self.semantics == "accumulate" or self.tier_map is None:
            return None
        return [n for n in self.sizes if self.is_active(n)]

    def apply(self, ctx: UpdateContext) -> int:
        """Clip and apply the active tiers' gradients (plus their accumulated chunks); returns elements."""
        tier_map = self.tier_map or dict.fromkeys(self.sizes, 0)
        active = set(self.active)
        divisor = [1] * self.n_tiers
        for t in range(self.n_tiers):
            if t in active or self.tier_map is None:
                divisor[t], self._pending[t] = self._pending[t] + 1, 0
            else:
                self._pending[t] += 1
        on = tier_filter(ctx.grads, tier_map, active)  # refuses unknown (e.g. nested-tree) names
        if self.semantics == "accumulate":
            for name, g in ctx.grads.items():
                if name not in on:
                    self._buffers[name] = self._buffers[name] + g if name in self._buffers else g
        applied: dict[str, mx.array] = {}
        for name, g in on.items():
            pending = self._buffers.pop(name, None)
            g = g if pending is None else pending + g
            if self.reduce == "mean" and divisor[tier_map[name]] > 1:
                g = g / divisor[tier_map[name]]
            applied[name] = g
        mx.eval(list(self._buffers.values()), list(applied.values()))
        self._record(applied)
        applied, _ = clip_by_global_norm(applied, ctx.max_grad_norm)
        scale = {n: self.lr_scale[tier_map[n]] for n in applied}
        return ctx.optimizer.apply(ctx.model, applied, ctx.lr, lr_scale=scale)

    # --- bookkeeping -----------------------------------------------------------------------------
    def _record(self, applied: Mapping[str, mx.array]) -> None:
        names = list(self.sizes)
        updated = np.array([n in applied for n in names])
        sq = np.zeros(len(names))
        if applied:
            norms = np.array(mx.stack([mx.sum(mx.square(g.astype(mx.float32))) for g in applied.values()]))
            sq[[names.index(n) for n in applied]] = norms
        self._steps.append(self.step)
        self._updated.append(updated)
        self._sq_norms.append(sq)

    def _index(self, tier: int) -> list[int]:
        return [i for i, n in enumerate(self.sizes) if self.tier_map[n] == tier]

    def _task_counts(self) -> list[int]:
        if self.tier_map is None or not self._steps:
            return [0] * self.n_tiers
        updated = np.stack(self._updated)
        return [int(updated[:, idx].any(1).sum()) if (idx := self._index(t)) else 0 for t in range(self.n_tiers)]

    def drift(self, tier: int) -> float | None:
        """L2 distance of the tier's tensors from their values at the start of the task."""
        if self._start is None:
            return None
        now = self._params()
        total = sum(float(mx.sum(mx.square((now[n] - self._start[n]).astype(mx.float32)))) for n in self.members(tier))
        return total ** 0.5

    def diagnostics(self) -> dict:
        """The JSON object of ``clbench.tiered``'s docstring (same keys, same meaning)."""
        out = {"semantics": self.semantics, "reduce": self.reduce, "frequencies": list(self.frequencies),
               "task_steps": len(self._steps), "tasks_finished": self.tasks_finished,
               "tier_map_ready": self.tier_map is not None, "tiers": []}
        if self.tier_map is None:
            return out
        counts = self._task_counts()
        steps = np.array(self._steps, dtype=int)
        updated = np.stack(self._updated) if self._steps else np.zeros((0, len(self.sizes)), dtype=bool)
        sq = np.stack(self._sq_norms) if self._steps else np.zeros((0, len(self.sizes)))
        for t, freq in enumerate(self.frequencies):
            idx = self._index(t)
            rows = updated[:, idx].any(1) if idx else np.zeros(len(self._steps), dtype=bool)
            out["tiers"].append({
                "tier": t, "frequency": freq, "parameters": len(idx),
                "elements": sum(self.sizes[n] for n in self.members(t)),
                "updates": counts[t], "updates_total": self.totals[t] + (counts[t] if self._task_open else 0),
                "steps": steps[rows].tolist(),
                "grad_norms": [round(float(v), 6) for v in np.sqrt(sq[rows][:, idx].sum(1))],
                "drift": self.drift(t)})
        return out

    def metadata(self) -> dict:
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


class TieredStrategy(MLXStrategy):
    """Base of the MLX tier strategies: a :class:`TieredUpdater` over the trainable tensors; subclasses
    say how tensors are placed in tiers (:meth:`initial_tier_map`). Options and their validation are the
    torch strategy's of the same name (``MLXStrategy.options_from``)."""

    schedule_field = "frequencies"

    def __init__(self, options=None, *, seed: int = 0, train=None):
        super().__init__(options, seed=seed, train=train)
        self.updater = self.make_updater()

    def make_updater(self) -> TieredUpdater:
        return TieredUpdater(self.options.frequencies, self.options.inactive)

    def initial_tier_map(self, model: nn.Module) -> dict[str, int] | None:
        raise NotImplementedError

    def mark_trainable(self, model: nn.Module) -> None:
        super().mark_trainable(model)
        self.updater.attach(model, self.trainable)
        tier_map = self.initial_tier_map(model)
        if tier_map is not None:
            self.updater.set_map(tier_map)

    def before_task(self, task, model) -> None:
        self.updater.begin_task()

    def before_step(self, step: int) -> None:
        self.updater.before_step(step)

    def grad_names(self, step: int) -> Collection[str] | None:
        return self.updater.grad_names()

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
