"""The tier updater's gradient norms on MLX arrays (``clbench.train.tiers.updater``; the torch twin is
``norms_torch``): the per-tensor squared norms of the gradients applied at a step, recorded per step for
the diagnostics' ``grad_norms``, and a tier's drift. Clipping recomputes its norm with mlx's own
``clip_grad_norm`` (``Backend.clip_global_norm``), so no norm is handed to it."""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
import numpy as np


def grad_norms(grads: Sequence[mx.array]) -> tuple[mx.array, np.ndarray]:
    """``(squared L2 norm of each gradient, the same as the numpy vector a step's record holds)``."""
    sq = mx.stack([mx.sum(mx.square(g.astype(mx.float32))) for g in grads])
    return sq, np.array(sq)


def total_norm(norms) -> None:
    return None  # clipping recomputes the norm with mlx's own clip_grad_norm


def subset_norm(norms, index: Sequence[int]) -> None:
    return None  # as total_norm


def zeros(n: int) -> np.ndarray:
    """A step's record of squared norms before any tensor is filled in."""
    return np.zeros(n)


def rows_norms(sq_rows: Sequence[np.ndarray], n: int, rows, positions: Sequence[int]) -> list[float]:
    """Per step selected by the bool vector ``rows``, the L2 norm over the tensors at ``positions`` of the
    recorded squared norms (rounded to 6 digits)."""
    sq = np.stack(sq_rows) if sq_rows else np.zeros((0, n))
    return [round(float(v), 6) for v in np.sqrt(sq[rows][:, positions].sum(1))]


def sq_distance(a: mx.array, b: mx.array) -> float:
    """``‖a − b‖²`` as a Python float (a tier's drift from its task-start values)."""
    return float(mx.sum(mx.square((a - b).astype(mx.float32))))
