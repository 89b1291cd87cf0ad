"""A worst case for the paper's tables: every table the report writes, at the size of the real grids.

Nineteen strategy labels as long as the shipped grids' (``importance_tiers``, ``sft-lr5e-3``, …) × 3
seeds, with a matched-learning frontier (``sft`` at four learning rates), tuning records (a tie among
them, and a pinned setting), a second task order, and a pretrained task's known subset and categories:
what ``make bench-real`` and ``make bench-large`` produce, in synthetic runs (``tests.report_runs``).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

from clbench.results.metrics import summarize
from tests.report_runs import TASKS, make_run

SEEDS = (0, 1, 2)
FRONTIER = {"sft-lr1e-4": 1e-4, "sft-lr2e-4": 2e-4, "sft-lr5e-4": 5e-4, "sft": 2e-3, "sft-lr5e-3": 5e-3}
OTHERS = ["layer_tiers", "importance_tiers", "cms", "cms-memory", "cms-local", "surprise", "activation_l2",
          "replay", "lwf", "ewc", "l2", "olora", "joint", "frozen"]
ITEMS = 24
CATEGORIES = ["capital", "currency", "language", "element", "planet"]


def _matrix(rng: random.Random, learn: float) -> list[list[float]]:
    """A 3×3 matrix of scores in steps of 1/24 (a probe suite of 24 items): general pretrained."""
    def q(x):
        return round(min(1.0, max(0.0, x)) * ITEMS) / ITEMS

    g = 0.5
    med = q(learn + rng.uniform(-0.1, 0.1))
    notes = q(learn + rng.uniform(-0.1, 0.1))
    return [[g, q(0.1), q(0.1)],
            [q(g - rng.uniform(0, 0.3)), med, q(0.1)],
            [q(g - rng.uniform(0, 0.4)), q(med - rng.uniform(0, 0.6)), notes]]


def _add_predictions(run: Path, R: list[list[float]]) -> None:
    """Per-item files whose means are ``R`` (24 items a task), so the bootstrap intervals exist."""
    def put(folder: str, row: list[float]) -> None:
        for task, score in zip(TASKS, row):
            right = round(score * ITEMS)
            recs = [{"id": f"{task}-{k}", "correct": k < right, "prediction": "", "answer": ""} for k in range(ITEMS)]
            (run / "predictions" / folder).mkdir(parents=True, exist_ok=True)
            (run / "predictions" / folder / f"{task}.qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))

    for i, row in enumerate(R[1:], start=1):
        put(f"after_{i}", row)
    put("base", R[0])
    put("reference", [0.0] * len(R))


def _add_known_and_categories(run: Path, rng: random.Random) -> None:
    matrix = json.loads((run / "matrix.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    qa = matrix["suites"]["qa"]
    R = [[v if j else min(1.0, v * 2) for j, v in enumerate(row)] for row in qa["R"]]
    base = [min(1.0, qa["base"][0] * 2), *qa["base"][1:]]
    matrix["suites"]["qa_known"] = {**qa, "subset_of": "qa", "R": R, "base": base, "known_items": {"general": 50}}
    metrics["suites"]["qa_known"] = summarize(R, qa["reference"], base, [0], True)
    metrics["categories"] = {"general": {"qa": {c: {"n": 20, "base": 0.5, "after": [0.5, rng.random(), rng.random()]}
                                                for c in CATEGORIES}}}
    (run / "matrix.json").write_text(json.dumps(matrix, indent=2, sort_keys=True) + "\n")
    (run / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def _tuning(root: Path, label: str, lrs: list[float], accs: list[float], pinned: bool = False) -> None:
    cands = [{"setting": {"train.lr": lr}, "run": f"results/exp-tuning/toy/{label}/lr{lr}", "acc": a,
              "learning_acc": 0.8, "forgetting": 0.3} for lr, a in zip(lrs, accs)]
    best = max(range(len(cands)), key=lambda i: (accs[i], -i))
    record = {"strategy": label, "label": label, "swept": {} if pinned else {"train.lr": lrs}, "pinned": pinned,
              "suite": "qa", "split": "validation", "seed": 0, "rule": "acc_given_la",
              "rule_text": "best ACC among candidates with LA >= 0.9 x the best LA", "la_ratio": 0.9,
              "candidates": [] if pinned else cands, "chosen": {"train.lr": lrs[best]},
              "reason": ("pinned in the config (make bench-tune, 2026-12-01 (batch 24, 180 steps, grouped), 2-core CPU)"
                         if pinned else f"best validation ACC {accs[best]:.3f} among {len(lrs)} of {len(lrs)} "
                         f"candidates with LA >= 0.9 x best LA 0.800")}
    path = root / "exp" / "toy" / label / "tuning.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def paper_results(root: Path) -> Path:
    """Write the worst-case result set under ``root``; returns ``root``."""
    rng = random.Random(0)
    learn = {"sft-lr1e-4": 0.3, "sft-lr2e-4": 0.45, "sft-lr5e-4": 0.85, "sft": 0.97, "sft-lr5e-3": 0.4}
    for label in [*FRONTIER, *OTHERS]:
        for s in SEEDS:
            R = _matrix(rng, learn.get(label, rng.uniform(0.3, 1.0)))
            train = {"lr": FRONTIER.get(label, 2e-3)}
            run = make_run(root, label, s, R, train=train, strategy="sft" if label in FRONTIER else label)
            _add_predictions(run, R)
            _add_known_and_categories(run, rng)
    # a second task order of two strategies: their own rows, and the orders table
    for label in ("sft", "importance_tiers"):
        for s in SEEDS:
            R = _matrix(rng, 0.8)
            run = make_run(root / "reordered", label, s, R, train={"lr": FRONTIER.get(label, 2e-3)},
                           strategy="sft" if label in FRONTIER else label)
            _add_predictions(run, R)
            _add_known_and_categories(run, rng)
            cfg = json.loads((run / "config.json").read_text())
            cfg["order"] = {"name": "reversed", "permutation": [0, 2, 1]}
            (run / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
            target = root / "exp" / "toy" / label / "order-reversed" / f"seed_{s}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(run), target)
    shutil.rmtree(root / "reordered")
    _tuning(root, "sft", [1.5e-3, 3e-3, 6e-3], [0.5, 0.5, 0.5])  # every candidate the same: a tie
    _tuning(root, "layer_tiers", [1.5e-3, 3e-3, 6e-3], [0.4, 0.55, 0.5])
    _tuning(root, "importance_tiers", [3e-3], [0.0], pinned=True)
    return root
