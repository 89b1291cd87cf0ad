"""The tier mechanism for MLX: ``clbench.train.tiers.updater``'s semantics and diagnostics, with flattened gradients.

Everything a reader of results sees is the torch mechanism's (``clbench.train.tiers.updater``, read its docstring):
the schedule (``clbench.train.tiers.schedule.active_tiers``, steps from 1), the two inactive-tier semantics, the
options (the torch strategies' own ``Options`` classes and validation), and the diagnostics JSON — the
same code, ``clbench.train.tiers.state`` — so reports draw tier timelines and drift for MLX runs unchanged.
What differs is the wiring:

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

from collections.abc import Collection, Mapping, Sequence

import mlx.core as mx
import numpy as np
from mlx import nn
from mlx.utils import tree_flatten

from clbench.backends.mlx.strategy import MLXStrategy, UpdateContext, clip_by_global_norm
from clbench.train.tiers.state import TierHooks, TierState


def tier_filter(grads: Mapping[str, mx.array], tier_map: Mapping[str, int],
                active: Collection[int]) -> dict[str, mx.array]:
    """``{name: gradient}`` of the tensors whose tier is in ``active``; ``grads`` must be flat."""
    unknown = [n for n in grads if n not in tier_map]
    if unknown:
        raise KeyError(f"gradients for parameters outside the tier map (is the gradient tree flattened?): "
                       f"{unknown[:5]}")
    return {n: g for n, g in grads.items() if tier_map[n] in active}


class TieredUpdater(TierState):
    """Which tensors update at a step, and what happens to the others (MLX twin of ``clbench.train.tiers.updater``;
    the tier map, schedule, chunk counts, records and diagnostics are ``clbench.train.tiers.state``'s)."""

    def __init__(self, frequencies: Sequence[int], semantics: str = "skip", reduce: str = "sum",
                 lr_scale: Sequence[float] | None = None):
        super().__init__(frequencies, semantics, reduce)
        self.lr_scale = list(lr_scale) if lr_scale is not None else [1.0] * self.n_tiers
        self.model: nn.Module | None = None
        self._start: dict[str, mx.array] | None = None

    # --- what is tiered --------------------------------------------------------------------------
    def attach(self, model: nn.Module, trainable: Mapping[str, mx.array]) -> None:
        self.model, self.sizes, self.tier_map = model, {n: int(v.size) for n, v in trainable.items()}, None

    def _params(self) -> dict[str, mx.array]:
        params = dict(tree_flatten(self.model.parameters()))
        return {n: params[n] for n in self.sizes}

    # --- per task --------------------------------------------------------------------------------
    def begin_task(self) -> None:
        super().begin_task()
        self._start = self._params()  # MLX arrays are immutable: keeping them is a snapshot

    # --- per step --------------------------------------------------------------------------------
    def grad_names(self) -> list[str] | None:
        """Tensors whose gradient this step needs: the active tiers' under ``skip``; all (None) otherwise."""
        if self.semantics == "accumulate" or self.tier_map is None:
            return None
        return [n for n in self.sizes if self.is_active(n)]

    def apply(self, ctx: UpdateContext) -> int:
        """Clip and apply the active tiers' gradients (plus their accumulated chunks); returns elements."""
        tier_map = self.tier_map or dict.fromkeys(self.sizes, 0)
        divisor = self.chunk_divisors()
        on = tier_filter(ctx.grads, tier_map, set(self.active))  # refuses unknown (e.g. nested-tree) names
        if self.semantics == "accumulate":
            for name, g in ctx.grads.items():
                if name not in on:
                    self.buffers[name] = self.buffers[name] + g if name in self.buffers else g
        applied: dict[str, mx.array] = {}
        for name, g in on.items():
            pending = self.buffers.pop(name, None)
            g = g if pending is None else pending + g
            if self.reduce == "mean" and divisor[tier_map[name]] > 1:
                g = g / divisor[tier_map[name]]
            applied[name] = g
        mx.eval(list(self.buffers.values()), list(applied.values()))
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
        self.log_step(updated, sq)

    def grad_norms(self, rows: np.ndarray, positions: list[int]) -> list[float]:
        sq = np.stack(self.task_sq_norms) if self.task_steps else np.zeros((0, len(self.sizes)))
        return [round(float(v), 6) for v in np.sqrt(sq[rows][:, positions].sum(1))]

    def drift(self, tier: int) -> float | None:
        """L2 distance of the tier's tensors from their values at the start of the task."""
        if self._start is None:
            return None
        now = self._params()
        total = sum(float(mx.sum(mx.square((now[n] - self._start[n]).astype(mx.float32)))) for n in self.members(tier))
        return total ** 0.5


class TieredStrategy(TierHooks, MLXStrategy):
    """Base of the MLX tier strategies: a :class:`TieredUpdater` over the trainable tensors; subclasses
    say how tensors are placed in tiers (:meth:`initial_tier_map`). Options and their validation are the
    torch strategy's of the same name (``MLXStrategy.options_from``); the hooks that only call the
    updater are ``clbench.train.tiers.state.TierHooks``."""

    def make_updater(self) -> TieredUpdater:
        return TieredUpdater(self.options.frequencies, self.options.inactive)

    def mark_trainable(self, model: nn.Module) -> None:
        super().mark_trainable(model)
        self.updater.attach(model, self.trainable)
        tier_map = self.initial_tier_map(model)
        if tier_map is not None:
            self.updater.set_map(tier_map)

    def grad_names(self, step: int) -> Collection[str] | None:
        return self.updater.grad_names()
