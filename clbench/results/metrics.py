"""Continual-learning metrics as pure functions of the accuracy matrix.

``R`` is a T×T matrix: ``R[i][j]`` is the score on task j's probes after training task i (0-based; a
task the base model learned in pretraining has the base model's row). ``b[j]`` is the score of an
untrained (randomly initialised) model of the same architecture, ``base[j]`` the base model's score
before any stream task. ``None`` marks a task without that probe suite; it is left out of every mean.

With T tasks (formulas 1-based, as in the papers):

* average accuracy       ACC = (1/T) Σ_j R[T,j]
* backward transfer      BWT = 1/(T−1) Σ_{j<T} (R[T,j] − R[j,j])          (Lopez-Paz & Ranzato 2017)
* forward transfer       FWT = 1/(T−1) Σ_{j≥2} (R[j−1,j] − b[j])           (Lopez-Paz & Ranzato 2017)
* FWT from the base      FWT_base = mean over trained tasks j whose previous task j−1 was trained too
                         of (R[j−1,j] − base[j])                            (the report's FWT column)
* average forgetting     F   = 1/(T−1) Σ_{j<T} (max_{l<T} R[l,j] − R[T,j]) (Chaudhry et al. 2018)
* learning accuracy      LA  = mean over trained tasks j of R[j,j]           (plasticity; Riemer et al. 2019)
* general retention      GR  = mean over pretrained tasks g of (R[T,g] − base[g])  (TRACE's general-ability delta)

Why LA leaves pretrained tasks out: Riemer's LA is the score on each task right after learning it. A
pretrained task is not learned by the strategy; its diagonal entry is the base model's score, the same
for every strategy of a stream, so counting it (as metrics.json did before ``METRICS_VERSION`` 2) only
shifts and compresses every LA (on the real stream, where the base model knows half of the world facts,
sft learning both new tasks perfectly had LA 0.833). Runs written before are read through
``clbench.results.files.load_run``, which recomputes their suites from ``matrix.json``.

Why a second FWT: clbench's base model is always pretrained (the embedded tiny model learns the
pretrained tasks, a user's checkpoint arrives pretrained), and there Lopez-Paz's FWT measures mostly
what pretraining gave. Its first term is R[p,p+1] − b[p+1] for the last pretrained task p, and row p
is the base model's, so that term is identical for every strategy; against a randomly initialised
reference ``b`` every term mostly measures the base model. ``fwt_base`` asks what forward transfer
means for a pretrained model: did training on the earlier *stream* tasks change the score on a task
not yet trained, compared with the base model before any stream task? Only rows a strategy produced
enter (j−1 trained), so no term is the same for every strategy by construction; with fewer than two
trained tasks it is undefined (None). ``fwt`` stays the paper's formula (and Avalanche's, below).

For a lower-is-better score (perplexity) forgetting uses the best (lowest) earlier value, so F > 0
means worse in both cases; ACC, BWT, FWT, LA and GR keep their raw sign and ``higher_is_better`` is
stored beside them.

Avalanche 0.6 defines forgetting per experience as (score right after training it − score now); its
stream average is −BWT, not Chaudhry's max-based F, which is larger whenever a task's score rose after
it was learned. Avalanche's forward transfer (score after the previous experience − score at random
initialisation) is FWT with ``b`` = the untrained reference row. ``tests/test_metrics_avalanche.py``
feeds the same matrices to Avalanche's metric classes and checks all three statements.

Every function also takes numpy arrays as cells (one shape for all of them): each metric is then computed
elementwise, with the same operations in the same order as for plain numbers, so ``summarize`` of a
matrix of arrays is, element by element, bitwise ``summarize`` of each matrix of numbers. The bootstrap
(:mod:`clbench.reporting.bootstrap`) computes every replicate in one call that way; ``None`` (a task
without the suite) stays a whole cell.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Matrix = Sequence[Sequence]


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _diff(a, b):
    return None if a is None or b is None else a - b


def _best(xs: list, higher_is_better: bool):
    """The best of ``xs`` (max, or min for lower-is-better), elementwise where they are arrays."""
    if not any(isinstance(x, np.ndarray) for x in xs):
        return max(xs) if higher_is_better else min(xs)
    pick = np.maximum if higher_is_better else np.minimum
    out = xs[0]
    for x in xs[1:]:
        out = pick(out, x)
    return out


def average_accuracy(R: Matrix) -> float | None:
    return _mean(R[-1])


METRICS_VERSION = 2  # 2: LA over trained tasks only (1 counted the pretrained tasks' base scores)


def learning_accuracy(R: Matrix, general: Sequence[int] = ()) -> float | None:
    """Mean of R[j][j] over the tasks not in ``general`` (the pretrained ones); None if every task is."""
    pre = set(general)
    return _mean(R[j][j] for j in range(len(R)) if j not in pre)


def backward_transfer(R: Matrix) -> float | None:
    T = len(R)
    return _mean(_diff(R[T - 1][j], R[j][j]) for j in range(T - 1)) if T > 1 else None


def forward_transfer(R: Matrix, b: Sequence[float | None]) -> float | None:
    T = len(R)
    return _mean(_diff(R[j - 1][j], b[j]) for j in range(1, T)) if T > 1 else None


def forward_transfer_from_base(R: Matrix, base: Sequence[float | None], general: Sequence[int]) -> float | None:
    """FWT_base: mean of ``R[j−1][j] − base[j]`` over tasks j ≥ 1 where neither j nor j−1 is a pretrained
    (``general``) task — the score on a task before training it, minus the base model's score on it."""
    pre = set(general)
    return _mean(_diff(R[j - 1][j], base[j]) for j in range(1, len(R)) if j not in pre and j - 1 not in pre)


def forgetting_per_task(R: Matrix, higher_is_better: bool = True) -> list[float | None]:
    """Chaudhry's f_j for every task j < T (best earlier score minus final score, sign-aligned)."""
    T = len(R)
    out = []
    for j in range(T - 1):
        earlier = [R[l][j] for l in range(T - 1) if R[l][j] is not None]
        if not earlier or R[T - 1][j] is None:
            out.append(None)
        elif higher_is_better:
            out.append(_best(earlier, True) - R[T - 1][j])
        else:
            out.append(R[T - 1][j] - _best(earlier, False))
    return out


def average_forgetting(R: Matrix, higher_is_better: bool = True) -> float | None:
    return _mean(forgetting_per_task(R, higher_is_better))


def general_retention(R: Matrix, base: Sequence[float | None], general: Sequence[int]) -> float | None:
    """Change on the general (pretrained) tasks' probes from the base model to the end of the stream."""
    return _mean(_diff(R[-1][g], base[g]) for g in general) if general else None


def summarize(R: Matrix, b: Sequence[float | None], base: Sequence[float | None], general: Sequence[int],
              higher_is_better: bool = True) -> dict:
    """Every metric above for one probe suite, as a JSON-able dict."""
    return {
        "acc": average_accuracy(R),
        "bwt": backward_transfer(R),
        "fwt": forward_transfer(R, b),
        "fwt_base": forward_transfer_from_base(R, base, general),
        "forgetting": average_forgetting(R, higher_is_better),
        "learning_acc": learning_accuracy(R, general),
        "general_retention": general_retention(R, base, general),
        "final_per_task": list(R[-1]),
        "forgetting_per_task": forgetting_per_task(R, higher_is_better),
        "higher_is_better": higher_is_better,
    }
