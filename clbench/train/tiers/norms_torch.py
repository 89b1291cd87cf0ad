"""The tier updater's gradient norms on torch tensors (``clbench.train.tiers.updater``; the MLX twin is
``norms_mlx``): the per-tensor norms of the gradients applied at a step — which clip each tier by its own
norm and are recorded per step for the diagnostics' ``grad_norms`` — and a tier's drift."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def grad_norms(grads: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L2 norm of each gradient, their squares as the float32 CPU vector a step's record holds)``."""
    # torch._foreach_norm is what clip_grad_norm_ uses itself: one call for all tensors
    norms = torch.stack(torch._foreach_norm(list(grads)))
    return norms, norms.float().pow(2).cpu()


def total_norm(norms: torch.Tensor) -> torch.Tensor:
    """The global L2 norm from :func:`grad_norms`' per-tensor norms (what clipping uses)."""
    return torch.linalg.vector_norm(norms)


def subset_norm(norms: torch.Tensor, index: Sequence[int]) -> torch.Tensor:
    """:func:`total_norm` of the tensors at ``index``."""
    return torch.linalg.vector_norm(norms[index])


def zeros(n: int) -> torch.Tensor:
    """A step's record of squared norms before any tensor is filled in."""
    return torch.zeros(n)


def rows_norms(sq_rows: Sequence[torch.Tensor], n: int, rows, positions: Sequence[int]) -> list[float]:
    """Per step selected by the bool vector ``rows``, the L2 norm over the tensors at ``positions`` of the
    recorded squared norms (rounded to 6 digits)."""
    sq = torch.stack(sq_rows) if sq_rows else torch.zeros(0, n)
    return [round(v, 6) for v in sq[torch.as_tensor(rows)][:, positions].sum(1).sqrt().tolist()]


def sq_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """``‖a − b‖²`` as a Python float (a tier's drift from its task-start values)."""
    return float((a.detach() - b).float().pow(2).sum())
