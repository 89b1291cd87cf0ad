"""Evaluate every probe suite of every task on a model: one row of the accuracy matrices."""

from __future__ import annotations

import time

from clbench.config.experiment import EvalConfig
from clbench.data.streams import Stream
from clbench.eval.probes import score_suite
from clbench.progress import bar


def evaluate_row(lm, stream: Stream, cfg: EvalConfig, desc: str = "eval", progress: bool = True) -> dict:
    """``{"scores": {task: {suite: score}}, "items": {task: {suite: [...]}}, "seconds", "n_items"}``.

    ``lm`` is a model view with ``generate`` / ``loglikelihood`` / ``token_nll`` (``clbench.eval.torch_lm``).
    """
    t0 = time.perf_counter()
    scores: dict[str, dict[str, float]] = {}
    items: dict[str, dict[str, list]] = {}
    work = [(t, s) for t in stream.tasks for s in t.probes]
    for task, suite in bar(work, desc=desc, enabled=progress, leave=False):
        res = score_suite(suite, lm, cfg.max_new_tokens)
        scores.setdefault(task.name, {})[suite.name] = res.score
        items.setdefault(task.name, {})[suite.name] = res.items
    n = sum(len(v) for suites in items.values() for v in suites.values())  # lm_eval suites: logged samples
    return {"scores": scores, "items": items, "seconds": time.perf_counter() - t0, "n_items": n}
