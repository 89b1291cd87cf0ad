"""Finer views of stored rows: scores on the *known subset* and per *category*, from per-item predictions.

A real pretrained model does not know every fact of a real-world knowledge suite, so its score there
mixes two things: facts it knew and lost, and facts it never knew (which no strategy can forget).
clbench reports both views:

* the plain suite (``qa``, ``mc``, ...): every item is scored, always;
* the **known subset** (``qa_known``, ``mc_known``): for a *pretrained* task, only the items the base
  model answered correctly before any fine-tuning; for a trained task, every item (nothing was known
  before). The subset is decided once per base model and stream, on the unmodified base model
  (``clbench.run.base_scores``), and stored with each run (``eval/known_subset.json``), so it cannot
  drift with the strategy or the seed. The known-subset score of the base model is 1 by construction;
  forgetting on it is the share of known facts lost.

  Only suites scored right-or-wrong per item (exact match, multiple choice) have a known subset;
  a perplexity suite has none.

* **per category**: when items carry a ``category`` field (``tasks/real_knowledge/``), the score of
  each category of each pretrained task, for the base model and after every task
  (``metrics.json`` → ``categories``).

Everything here is computed from the stored prediction files of a run, never from a model.
"""

from __future__ import annotations

import math
from pathlib import Path

from clbench.data.probe_kinds import RIGHT_OR_WRONG_KINDS, aggregation
from clbench.data.streams import Stream
from clbench.results.files import RunFiles, read_json, read_jsonl

KNOWN_SUFFIX = "_known"


def known_subset_path(files: RunFiles) -> Path:
    return files.root / "eval" / "known_subset.json"


def _items(path: Path) -> list[dict] | None:
    if not path.exists():
        return None
    return read_jsonl(path)


def _row_keys(stream: Stream) -> list[int | str]:
    """Where each row's predictions are: a pretrained task's row is the base row, copied."""
    return ["base" if p else t for t, p in enumerate(stream.pretrained_flags)]


def subset_score(items: list[dict] | None, kind: str, ids: set[str] | None = None) -> float | None:
    """The suite score over ``items`` (restricted to ``ids`` when given); ``None`` when nothing is left."""
    if items is None:
        return None
    chosen = [i for i in items if ids is None or i["id"] in ids]
    if not chosen:
        return None
    if aggregation(kind) == "perplexity":
        return math.exp(sum(i["nll"] for i in chosen) / sum(i["tokens"] for i in chosen))
    return sum(bool(i["correct"]) for i in chosen) / len(chosen)


def known_suites(files: RunFiles, stream: Stream, mats: dict) -> dict:
    """``{"<suite>_known": matrix entry}`` for every suite with a stored known subset (see module doc)."""
    path = known_subset_path(files)
    if not path.exists():
        return {}
    known = read_json(path)["ids"]  # {task: {suite: [ids]}}
    keys = _row_keys(stream)
    out = {}
    for suite, mat in mats.items():
        if mat["kind"] not in RIGHT_OR_WRONG_KINDS or not any(suite in known.get(t.name, {}) for t in stream.tasks):
            continue

        def score(key, j, plain, suite=suite, mat=mat):
            task = stream.tasks[j]
            ids = known.get(task.name, {}).get(suite)
            if not task.pretrained or ids is None:
                return plain
            items = _items(files.prediction_file(key, task.name, suite))
            return subset_score(items, mat["kind"], set(ids))

        out[suite + KNOWN_SUFFIX] = {
            "kind": mat["kind"], "higher_is_better": mat["higher_is_better"], "subset_of": suite,
            "R": [[score(keys[t], j, v) for j, v in enumerate(row)] for t, row in enumerate(mat["R"])],
            "base": [score("base", j, v) for j, v in enumerate(mat["base"])],
            "reference": [score("reference", j, v) for j, v in enumerate(mat["reference"])],
            "known_items": {t.name: len(known[t.name][suite]) for t in stream.tasks if suite in known.get(t.name, {})},
        }
    return out


def category_scores(files: RunFiles, stream: Stream) -> dict:
    """``{task: {suite: {category: {"base": x, "after": [per task], "n": items}}}}`` for pretrained tasks
    whose items carry a ``category``."""
    keys = _row_keys(stream)
    out: dict = {}
    for task in stream.pretrained_tasks:
        for suite in task.probes:
            cats = sorted({it["category"] for it in suite.items if "category" in it})
            if not cats:
                continue
            base = _items(files.prediction_file("base", task.name, suite.name))
            after = [_items(files.prediction_file(k, task.name, suite.name)) for k in keys]
            out.setdefault(task.name, {})[suite.name] = {
                c: {"n": sum(it.get("category") == c for it in suite.items),
                    "base": subset_score([i for i in base or [] if i.get("category") == c], suite.kind),
                    "after": [subset_score([i for i in a or [] if i.get("category") == c], suite.kind) for a in after]}
                for c in cats}
    return out
