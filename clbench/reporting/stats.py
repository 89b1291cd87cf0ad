"""The statistics behind every table and figure, as pure functions of per-seed numbers.

* **Confidence interval** — Student t interval of the mean over seeds: mean ± t_{(1+c)/2, n−1} · s / √n
  with the sample standard deviation s (n − 1 in the denominator). With 3 seeds a t interval is wide
  (t = 4.30), which is the honest width; a normal interval would understate it by more than half.
  No interval for n < 2.
* **Paired test against a reference** (``sft``) — two-sided paired t-test (``scipy.stats.ttest_rel``)
  on the seeds both strategies ran: the seed fixes the data order of every task, so pairing on it
  removes the seed-to-seed variance both share. A difference identical on every seed (e.g. a
  deterministic cost such as trainable parameters) has zero variance, where the t statistic is
  undefined: *no test possible* (p = None, reason stated in ``numbers.json``), unless the difference
  is exactly zero on every seed, which is p = 1 (no difference). Fewer than two pairs: no test.
* **Family-wise error** — a table compares up to 13 strategies with the reference in several columns;
  at p < 0.05 per comparison some would be marked by chance. The mark uses Holm–Bonferroni
  (Holm 1979) over every comparison *in that table* that has a p-value: sort the m p-values,
  p_(k) is multiplied by (m − k + 1), made monotone (running maximum) and capped at 1; a comparison
  is marked when its adjusted p < 0.05. This controls the probability of any false mark in the table
  at 0.05 under any dependence between the tests (the numbers of ``statsmodels``'
  ``multipletests(method="holm")``, written out: see :func:`holm`).
* **Second interval** — a hierarchical bootstrap over seeds and probe items
  (:mod:`clbench.reporting.bootstrap`), in ``numbers.json`` next to the t interval; the tables show
  the t interval.
* **Best per column** — the best *displayed* value (after rounding), direction-aware; ties all win, so
  a reader never sees two equal numbers with only one of them in bold.
* **Pareto front** on (forgetting ↓, learning accuracy ↑) over seed means: a strategy is on the front
  when no other has forgetting ≤ and learning accuracy ≥ with one of them strict. A method that learns
  less also forgets less (Biderman et al. 2024, LoRA vs full fine-tuning); the front keeps "forgets
  less" from counting where a method simply learns less.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95
ALPHA = 0.05


@dataclass(frozen=True)
class Estimate:
    """Mean over seeds with its confidence half-width (``None`` when n < 2)."""

    mean: float | None
    half_width: float | None
    n: int
    sd: float | None = None

    @property
    def low(self) -> float | None:
        return None if self.mean is None or self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        return None if self.mean is None or self.half_width is None else self.mean + self.half_width


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


@functools.cache
def t_quantile(confidence: float, dof: int) -> float:
    from scipy.stats import t

    return float(t.ppf((1 + confidence) / 2, dof))


def mean_ci(values, confidence: float = CONFIDENCE) -> Estimate:
    """Mean and Student-t confidence half-width of the non-missing ``values``.

    scipy gives the quantile; mean and standard deviation are ``math.fsum`` sums, correctly rounded
    whatever the order of the seeds, so a table cell does not change with the order runs are read in
    (``scipy.stats.ttest_1samp(...).confidence_interval`` gives the same interval up to that rounding,
    checked in ``tests/test_report_stats.py``)."""
    xs = _finite(values)
    n = len(xs)
    if n == 0:
        return Estimate(None, None, 0)
    mean = math.fsum(xs) / n
    if n < 2:
        return Estimate(mean, None, 1)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    return Estimate(mean, t_quantile(confidence, n - 1) * sd / math.sqrt(n), n, sd)


NO_PAIRS = "fewer than two seeds in common"
CONSTANT = "no test possible: the difference is identical on every seed"


@dataclass(frozen=True)
class PairedTest:
    """A paired t-test's outcome: ``p`` (None when there is no test), the pairs, and why not."""

    p: float | None
    pairs: int
    no_test: str | None = None  # NO_PAIRS or CONSTANT when p is None


def paired_test(a: Mapping[int, float | None], b: Mapping[int, float | None]) -> PairedTest:
    """Two-sided paired t-test of ``a`` vs ``b`` on their common seeds (rules in the module docstring)."""
    seeds = sorted(s for s in set(a) & set(b) if a[s] is not None and b[s] is not None
                   and math.isfinite(a[s]) and math.isfinite(b[s]))
    n = len(seeds)
    if n < 2:
        return PairedTest(None, n, NO_PAIRS)
    diffs = [float(a[s]) - float(b[s]) for s in seeds]
    if all(d == 0.0 for d in diffs):
        return PairedTest(1.0, n)  # exactly no difference
    scale = max(1.0, *(abs(float(a[s])) for s in seeds), *(abs(float(b[s])) for s in seeds))
    if max(diffs) - min(diffs) <= 1e-12 * scale:  # zero variance: t undefined (see module docstring)
        return PairedTest(None, n, CONSTANT)
    from scipy.stats import ttest_rel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's precision note on near-constant data
        p = float(ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue)
    return PairedTest(p, n) if math.isfinite(p) else PairedTest(None, n, CONSTANT)


def paired_p(a: Mapping[int, float | None], b: Mapping[int, float | None]) -> tuple[float | None, int]:
    """:func:`paired_test` as ``(p-value or None, pairs)``."""
    t = paired_test(a, b)
    return t.p, t.pairs


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values (None stays None and does not count towards m).

    ``statsmodels.stats.multitest.multipletests(method="holm")`` computes the same numbers
    (``tests/test_report_stats.py`` checks it on random families) but runs ``gc.collect()`` on every call
    (statsmodels 0.14), 50 ms and more per table, which the coverage simulation (``clbench coverage``)
    pays tens of thousands of times; the step-down rule is these few lines."""
    present = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(present)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for k, (p, i) in enumerate(present):
        running = max(running, min(1.0, (m - k) * p))
        out[i] = running
    return out


def significant(p: float | None, alpha: float = ALPHA) -> bool:
    return p is not None and p < alpha


def best(values: Sequence[float | None], higher_is_better: bool) -> set[int]:
    """Indices of the best non-missing values (all of them when tied)."""
    present = [v for v in values if v is not None and math.isfinite(v)]
    if not present:
        return set()
    target = max(present) if higher_is_better else min(present)
    return {i for i, v in enumerate(values) if v is not None and v == target}


def pareto_optimal(points: Sequence[tuple[float | None, float | None]], la_higher_is_better: bool = True
                   ) -> list[bool]:
    """For (forgetting, learning accuracy) points: is each one undominated (lower F, better LA)?

    ``la_higher_is_better=False`` for a lower-is-better score (perplexity); forgetting is always
    sign-aligned so that lower is better (:mod:`clbench.results.metrics`).
    """
    def dominates(p, q) -> bool:
        return p[0] <= q[0] and p[1] >= q[1] and (p[0] < q[0] or p[1] > q[1])

    valid = [p[0] is not None and p[1] is not None for p in points]
    sign = 1.0 if la_higher_is_better else -1.0
    points = [(p[0], sign * p[1]) if v else p for p, v in zip(points, valid)]
    return [valid[i] and not any(valid[j] and j != i and dominates(points[j], points[i]) for j in range(len(points)))
            for i in range(len(points))]
