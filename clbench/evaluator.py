"""Evaluate every probe suite of every task on a model: one row of the accuracy matrices."""

from __future__ import annotations

import time

import torch

from clbench.config import EvalConfig
from clbench.lm import TorchLM
from clbench.probes import score_suite
from clbench.streams import Stream
from clbench.progress import bar


def evaluate_row(model, tokenizer, stream: Stream, cfg: EvalConfig, desc: str = "eval",
                 progress: bool = True) -> dict:
    """``{"scores": {task: {suite: score}}, "items": {task: {suite: [...]}}, "seconds", "n_items"}``.

    The model is put in eval mode (no dropout) for the duration and restored afterwards.
    """
    lm = TorchLM(model, tokenizer, batch_size=cfg.batch_size)
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    scores: dict[str, dict[str, float]] = {}
    items: dict[str, dict[str, list]] = {}
    work = [(t, s) for t in stream.tasks for s in t.probes]
    try:
        with torch.no_grad():
            for task, suite in bar(work, desc=desc, enabled=progress, leave=False):
                res = score_suite(suite, lm, cfg.max_new_tokens)
                scores.setdefault(task.name, {})[suite.name] = res.score
                items.setdefault(task.name, {})[suite.name] = res.items
    finally:
        model.train(was_training)
    n = sum(len(s.items) for _, s in work)
    return {"scores": scores, "items": items, "seconds": time.perf_counter() - t0, "n_items": n}
