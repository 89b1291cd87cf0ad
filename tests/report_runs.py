"""Synthetic finished runs for the report tests, in the exact on-disk layout of ``clbench.results.files``.

The report reads only files, so a run made of hand-chosen matrices is as real to it as a trained one;
``metrics.json`` is computed with ``clbench.results.metrics.summarize``, as the runner does.
"""

from __future__ import annotations

import json
from pathlib import Path

from clbench.results.metrics import METRICS_VERSION, summarize

TASKS = ["general", "medical", "notes"]
PRETRAINED = [True, False, False]
STEPS = 4


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def make_run(root: Path, label: str, seed: int, R, *, strategy: str = "sft", options: dict | None = None,
             stream: str = "toy", base=None, reference=None, cost: dict | None = None,
             diagnostics: dict | None = None, train: dict | None = None, losses=None, commit: str = "abc123",
             suite: str = "qa", kind: str = "exact_match") -> Path:
    """One finished run of ``label`` with seed ``seed`` whose ``suite`` matrix (``qa``, exact match, unless
    told otherwise; ``kind`` perplexity is lower-is-better) is ``R`` (T×T).

    ``diagnostics``: ``{task index: dict}`` stored in ``eval/after_<t>.json``; ``losses``: per trained
    task a list of ``STEPS`` losses (default: a falling line).
    """
    T = len(R)
    tasks, pretrained = TASKS[:T], PRETRAINED[:T]
    base = base or list(R[0])
    reference = reference or [0.0] * T
    general = [i for i, p in enumerate(pretrained) if p]
    d = Path(root) / "exp" / stream / label / f"seed_{seed}"
    train = {"steps_per_task": STEPS, "batch_size": 2, "lr": 0.01, **(train or {})}
    _write(d / "config.json", {
        "schema": 1, "experiment": "exp", "seed": seed,
        "strategy": {"name": strategy, "label": label, "options": options or {}},
        "stream": {"name": stream, "source": f"/streams/{stream}.yaml", "fingerprint": "f00d", "tasks": tasks,
                   "pretrained": pretrained, "suites": [suite], "primary_metric": suite},
        "model": {"hidden_size": 8, "num_layers": 2, "path": None}, "base_model": "toy-base", "train": train,
        "eval": {"batch_size": 4}})
    _write(d / "provenance.json", {"python": "3.11.7", "platform": "test", "torch_threads": 1, "cuda": None,
                                   "packages": {"clbench": "0.1.0", "torch": "2.14.1"},
                                   "git": {"commit": commit, "dirty": False}})
    higher_is_better = kind != "perplexity"
    _write(d / "matrix.json", {"tasks": tasks, "suites": {suite: {"kind": kind, "higher_is_better": higher_is_better,
                                                                   "R": R, "base": base, "reference": reference}}})
    cost = {"train_seconds": 10.0 + seed, "eval_seconds": 1.0, "tokens": 4000, "optimizer_steps": 8,
            "updated_elements": 1_000_000, "trainable_parameters": 2000, **(cost or {})}
    _write(d / "metrics.json", {"metrics_version": METRICS_VERSION, "primary_metric": suite, "cost": cost,
                                "final_loss": {task: 0.5 for task, p in zip(tasks, pretrained) if not p},
                                "suites": {suite: summarize(R, reference, base, general, higher_is_better)}})
    log, g = [], 0
    for t in range(T):
        row = {"scores": {task: {suite: R[t][j]} for j, task in enumerate(tasks)}, "seconds": 0.1, "n_items": 10,
               "pretrained": pretrained[t], "diagnostics": (diagnostics or {}).get(t, {})}
        _write(d / "eval" / f"after_{t}.json", row)
        if pretrained[t]:
            continue
        task_losses = (losses or {}).get(t, [3.0 - 0.5 * s for s in range(STEPS)])
        for s, loss in enumerate(task_losses, start=1):
            g += 1
            log.append({"task": t, "step": s, "global_step": g, "loss": loss + 0.01 * seed, "lr": 0.01,
                        "step_time": 0.01, "tokens": 100, "updated_elements": 10})
    (d / "train_log.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in log))
    (d / "DONE").write_bytes(b"")
    return d
