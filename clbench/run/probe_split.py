"""The validation/test split of every probe suite: tuning reads only validation items, tables only test items.

Tuning a method on the probes its table reports is peeking. So when a grid tunes (``clbench.run.sweep``),
each native probe suite of each task is split once into *validation* and *test* items:

* which items go where depends only on the suite's item count, the task and suite names and
  ``tuning.split_seed`` — never on the items' contents, so building the split reads no item, and the
  same stream file gives the same split on every machine and every run;
* ``round(val_fraction * n)`` items (at least one, at most ``n - 1``) are validation, the rest test;
* an lm-eval suite (scored by lm-eval on its own documents) cannot be split item by item: it is left
  out of the validation stream and scored in full on the test stream.

:func:`split_stream` gives the stream a run sees: the same tasks with only the role's items.
:func:`split_record` is what the grid writes to ``<results>/<experiment>/<stream>/probe_split.json``
(the rule, every suite's validation indices and ids), and each run's ``config.json`` records its role.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import replace

from clbench.errors import ConfigError
from clbench.results.files import probe_split_file

ROLES = ("validation", "test")


def split_indices(n: int, fraction: float, task: str, suite: str, seed: int) -> tuple[list[int], list[int]]:
    """``(validation indices, test indices)`` of a suite of ``n`` items: disjoint, covering, sorted."""
    if n < 2:
        raise ConfigError(f"stream task {task!r} probe suite {suite!r}",
                          f"has {n} item(s); a validation/test split needs at least 2")
    key = int(hashlib.sha256(f"{seed}:{task}:{suite}".encode()).hexdigest()[:16], 16)
    perm = random.Random(key).sample(range(n), n)
    k = min(n - 1, max(1, round(fraction * n)))
    return sorted(perm[:k]), sorted(perm[k:])


def scores_test_items(cfg, stream_name: str, tunes_a_row: bool) -> bool:
    """Whether a grid's runs score the test items only: when this invocation tunes or pins a row
    (``tunes_a_row``), when the experiment tunes at all (``tuning.pinned`` or ``tuning.sweep``, even for rows
    this invocation leaves out, as ``--strategies`` or ``--set strategies=...`` do), and when the experiment's
    earlier runs did (its ``probe_split.json`` exists). Which items a row is scored on must not depend on
    which rows one invocation runs: the report compares the rows of an experiment item for item, and its
    matched-learning frontier takes only rows whose configuration (split included) equals ``sft``'s."""
    return tunes_a_row or bool(cfg.tuning.pinned or cfg.tuning.sweep) or probe_split_file(cfg, stream_name).exists()


def split_stream(stream, role: str, fraction: float, seed: int):
    """``stream`` keeping only the ``role`` ("validation" or "test") items of every native suite."""
    if role not in ROLES:
        raise ValueError(f"role {role!r}; known: {ROLES}")
    primary = stream.spec.primary_metric
    tasks = []
    for task in stream.tasks:
        suites = []
        for suite in task.probes:
            if suite.kind == "lm_eval":
                if role == "test":
                    suites.append(suite)
                elif suite.name == primary:
                    raise ConfigError(f"{stream.source}.primary_metric", f"the primary suite {primary!r} is an "
                                      "lm-eval suite, which cannot be split for tuning; tune on a native suite")
                continue
            val, test = split_indices(len(suite.items), fraction, task.name, suite.name, seed)
            keep = val if role == "validation" else test
            suites.append(replace(suite, items=tuple(suite.items[i] for i in keep)))
        tasks.append(replace(task, probes=tuple(suites)))
    derived = {**stream.derived, "source_fingerprint": stream.file_fingerprint,
               "probe_split": {"role": role, "val_fraction": fraction, "split_seed": seed}}
    return replace(stream, tasks=tuple(tasks), derived=derived)


def split_record(stream, fraction: float, seed: int) -> dict:
    """The split as written once per grid, before any run: the rule, and per native suite the
    validation item ids and the test item count (the test items are all the others). Reads only the
    validation items, so tuning never touches a test item, not even to record it."""
    out: dict = {"val_fraction": fraction, "split_seed": seed, "stream_fingerprint": stream.file_fingerprint,
                 "rule": "validation = the first round(val_fraction * n) of random.Random(sha256('<split_seed>:"
                         "<task>:<suite>')).sample(range(n), n), sorted; test = the other items",
                 "suites": {}}
    for task in stream.tasks:
        for suite in task.probes:
            if suite.kind == "lm_eval":
                out["suites"][f"{task.name}/{suite.name}"] = {"lm_eval": True, "role": "test only"}
                continue
            val, test = split_indices(len(suite.items), fraction, task.name, suite.name, seed)
            out["suites"][f"{task.name}/{suite.name}"] = {
                "n_items": len(suite.items), "validation_indices": val,
                "validation_ids": [suite.items[i]["id"] for i in val], "test_items": len(test)}
    return out
