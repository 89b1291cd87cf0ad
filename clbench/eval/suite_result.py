"""What scoring one probe suite returns: its score, its item count and the per-item records.

Its own module so that every scorer (``clbench.eval.probes`` for native suites,
``clbench.eval.lm_eval_suite`` for lm-eval tasks) returns it without importing the dispatcher.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SuiteResult:
    score: float
    n: int
    items: list[dict]  # one JSON-able record per probe item (prompt, prediction, correct, ...)
