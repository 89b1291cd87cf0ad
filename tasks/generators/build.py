"""Turn a domain's facts into training documents and three probe suites.

Output records use the same field names as user JSONL files (see ``clbench.data.streams``):

* training: ``{"text"}`` statements and ``{"prompt", "completion"}`` question/answer pairs;
* ``qa`` (exact match): ``{"id", "prompt", "answer"}`` on the held-out question template;
* ``mc`` (multiple choice by log-likelihood): ``{"id", "prompt", "choices", "label"}``, same question,
  the answer among three distractors of the same relation;
* ``ppl`` (held-out perplexity): ``{"id", "text"}``, the held-out statement template.
"""

from __future__ import annotations

import random

from clbench.tasks.generators.domains import DOMAINS, Fact
from clbench.tasks.generators.names import NamePool

QA_PROMPT = "Question: {q}\nAnswer:"


def _fill(template: str, fact: Fact) -> str:
    return template.format(v=fact.value, **fact.entity)


def build_domain(domain: str, n_entities: int, seed: int, n_choices: int = 4) -> dict[str, list[dict]]:
    """Generated records of one domain: ``{"train": [...], "qa": [...], "mc": [...], "ppl": [...]}``.

    Deterministic in ``(domain, n_entities, seed)``; the random stream of one domain does not depend on
    the other domains, so changing one domain's size leaves the others' data unchanged.
    """
    if domain not in DOMAINS:
        raise KeyError(f"unknown generated domain {domain!r}; known: {sorted(DOMAINS)}")
    rng = random.Random(f"clbench:{domain}:{seed}")
    facts = DOMAINS[domain](rng, NamePool(rng), n_entities)
    return records_from_facts(facts, rng, domain, n_choices)


def records_from_facts(facts: list[Fact], rng: random.Random, prefix: str, n_choices: int = 4) -> dict[str, list[dict]]:
    """Training documents and the three probe suites of ``facts`` (ids ``<prefix>-<index>-<relation>``).

    Per fact one statement template and one question template are held out (drawn from ``rng``): the
    training records are the other paraphrases, in an order shuffled by ``rng``; ``qa`` asks the held-out
    question, ``mc`` offers the answer among ``n_choices - 1`` other values of the fact's ``pool``, ``ppl``
    scores the held-out statement. Also the records of the real-data tasks (``tasks/real_medicine``,
    ``tasks/real_chemistry``), whose facts come from packaged data instead of invented names.
    """
    out: dict[str, list[dict]] = {"train": [], "qa": [], "mc": [], "ppl": []}
    for i, fact in enumerate(facts):
        rel = fact.relation
        held_s = rng.randrange(len(rel.statements))
        held_q = rng.randrange(len(rel.questions))
        for k, tpl in enumerate(rel.statements):
            if k != held_s:
                out["train"].append({"text": _fill(tpl, fact)})
        for k, tpl in enumerate(rel.questions):
            if k != held_q:
                out["train"].append({"prompt": QA_PROMPT.format(q=_fill(tpl, fact)), "completion": " " + fact.value})
        fid = f"{prefix}-{i:04d}-{rel.name}"
        prompt = QA_PROMPT.format(q=_fill(rel.questions[held_q], fact))
        out["qa"].append({"id": fid, "prompt": prompt, "answer": fact.value})
        others = [v for v in dict.fromkeys(fact.pool) if v != fact.value]
        if len(others) < n_choices - 1:  # (the stream loader reports a ValueError as the stream's error)
            raise ValueError(f"{fid}: {len(others)} other value(s) of its relation to draw from, and a "
                             f"multiple-choice item needs {n_choices - 1} distractors (more entities give more)")
        distractors = rng.sample(others, n_choices - 1)
        choices = distractors + [fact.value]
        rng.shuffle(choices)
        out["mc"].append({"id": fid, "prompt": prompt, "choices": choices, "label": choices.index(fact.value)})
        out["ppl"].append({"id": fid, "text": _fill(rel.statements[held_s], fact)})
    rng.shuffle(out["train"])
    return out
