"""Where a probe is scored: exact match, multiple choice by log-likelihood, held-out perplexity.

Each scorer takes a probe suite and a model view (``clbench.eval.torch_lm.TorchLM`` or any object with the same
``generate`` / ``loglikelihood`` / ``token_nll`` methods) and returns per-item records plus one score.
Per-item records are stored with every run, so any number in a table can be traced to the answers.

* exact match: greedy generation, cut at the first newline (and at the suite's ``until`` strings),
  compared after :func:`normalize` with the answer and its ``aliases``; the view is given ``until`` so
  that it may stop decoding a continuation once its cut is settled (the recorded ``generated`` text then
  ends just after the ``until`` string that cut it);
* multiple choice: the choice with the highest summed log-likelihood of ``" " + choice`` after the
  prompt wins (``acc``, as lm-eval's ``acc``); ties go to the lowest index;
* perplexity: ``exp(total NLL / total tokens)`` over the suite (token-weighted, lower is better);
* lm_eval: the suite's lm-eval task run by lm-eval's own evaluator (``clbench.eval.lm_eval_suite``); its
  ``higher_is_better`` is the task's own for the chosen metric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from clbench.data.answers import normalize
from clbench.data.probe_kinds import PROBE_KINDS
from clbench.data.streams import ProbeSuite
from clbench.eval.suite_result import SuiteResult


def cut_at(text: str, until: Sequence[str]) -> str:
    """``text`` up to the first of the ``until`` strings (all of it when none occurs)."""
    ends = [i for i in (text.find(u) for u in until) if i >= 0]
    return text[: min(ends)] if ends else text


def _category(it: dict) -> dict:
    return {"category": it["category"]} if "category" in it else {}


def score_exact_match(suite: ProbeSuite, lm, max_new_tokens: int) -> SuiteResult:
    until = tuple(suite.config.get("until", ()))
    # the view may stop a continuation once these have settled where it is cut (the cut answer is the same)
    preds = lm.generate([it["prompt"] for it in suite.items], max_new_tokens=max_new_tokens, until=until)
    items = []
    for it, raw in zip(suite.items, preds):
        pred = cut_at(raw, until)
        accepted = {normalize(a) for a in (it["answer"], *it.get("aliases", ()))}
        items.append({"id": it["id"], "prediction": pred, "answer": it["answer"], **_category(it),
                      **({"generated": raw} if until else {}), "correct": normalize(pred) in accepted})
    return SuiteResult(sum(i["correct"] for i in items) / len(items), len(items), items)


def score_multiple_choice(suite: ProbeSuite, lm) -> SuiteResult:
    pairs = [(it["prompt"], " " + c) for it in suite.items for c in it["choices"]]
    lls = lm.loglikelihood(pairs)
    items, k = [], 0
    for it in suite.items:
        scores = lls[k : k + len(it["choices"])]
        k += len(it["choices"])
        pred = max(range(len(scores)), key=lambda i: (scores[i], -i))
        items.append({"id": it["id"], "scores": scores, "prediction": pred, "label": it["label"], **_category(it),
                      "correct": pred == it["label"]})
    return SuiteResult(sum(i["correct"] for i in items) / len(items), len(items), items)


def score_perplexity(suite: ProbeSuite, lm) -> SuiteResult:
    nlls = lm.token_nll([it["text"] for it in suite.items])
    items = [{"id": it["id"], "nll": nll, "tokens": n, **_category(it)} for it, (nll, n) in zip(suite.items, nlls)]
    total = sum(i["nll"] for i in items) / sum(i["tokens"] for i in items)
    return SuiteResult(math.exp(total), len(items), items)


def higher_is_better(suite: ProbeSuite) -> bool:
    """Direction of a suite's score: its kind's (``clbench.data.probe_kinds``), or an lm-eval suite's metric's own."""
    if suite.kind not in PROBE_KINDS:
        raise ValueError(f"unknown probe kind {suite.kind!r}; known: {list(PROBE_KINDS)}")
    kind = PROBE_KINDS[suite.kind].higher_is_better
    return suite.config["higher_is_better"] if kind is None else kind


def _score_lm_eval(suite: ProbeSuite, lm, max_new_tokens: int) -> SuiteResult:
    from clbench.eval.lm_eval_suite import score_lm_eval  # imports lm-eval: only for streams that use it

    return score_lm_eval(suite, lm)


# one scorer per kind of clbench.data.probe_kinds (tests/test_probe_kinds.py checks they match)
SCORERS = {"exact_match": score_exact_match,
           "multiple_choice": lambda suite, lm, max_new_tokens: score_multiple_choice(suite, lm),
           "perplexity": lambda suite, lm, max_new_tokens: score_perplexity(suite, lm),
           "lm_eval": _score_lm_eval}


def score_suite(suite: ProbeSuite, lm, max_new_tokens: int = 12) -> SuiteResult:
    if suite.kind not in SCORERS:
        raise ValueError(f"unknown probe kind {suite.kind!r}; known: {list(PROBE_KINDS)}")
    return SCORERS[suite.kind](suite, lm, max_new_tokens)
