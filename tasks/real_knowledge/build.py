"""Write the real-world knowledge probes from ``facts.yaml``: three probe forms per fact, plus background text.

    python -m tasks.real_knowledge.build        # rewrites tasks/real_knowledge/*.jsonl

For every fact of every category (``facts.yaml``):

* ``qa.jsonl`` (exact match): ``{"id", "category", "prompt", "answer", "aliases"}`` — the cloze prompt,
  scored on the greedy continuation cut at the first ``.``/``,``/``;``/`` (``/newline (``until`` in
  ``tasks/real.yaml``); ``aliases`` are other accepted spellings;
* ``mc.jsonl`` (multiple choice by log-likelihood): the same prompt, the answer among three distractors
  drawn from the *other answers of the same category* (so a choice is always of the right type);
* ``ppl.jsonl`` (perplexity of a true statement): the category's statement template, a different
  phrasing from the prompt.

Every fourth fact of a category (index 3, 7, ...) is held out of the probes and written as a training
statement to ``background.jsonl`` instead: the pretrained task's own records, which replay-style
strategies may rehearse, never the probed facts themselves.

Probe records are interleaved across categories (one of each in turn), so the first N items of any
file cover every category evenly: a stream can score a prefix (``limit``) and stay balanced.
The files are shipped; ``tests/test_real_knowledge.py`` checks they equal this script's output.
"""

from __future__ import annotations

import json
import random
from itertools import zip_longest
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
FACTS = HERE / "facts.yaml"
N_CHOICES = 4
BACKGROUND_EVERY = 4  # every 4th fact of a category is background text, not a probe
FILES = ("qa.jsonl", "mc.jsonl", "ppl.jsonl", "background.jsonl")


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def load_facts(path: Path = FACTS) -> list[dict]:
    """Facts as ``{"category", "prompt", "answer", "aliases", "statement"}`` in file order."""
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    out = []
    for category, cat in spec["categories"].items():
        for raw in cat["facts"]:
            if isinstance(raw, dict):
                fact = {"prompt": raw["prompt"], "answer": raw["answer"], "aliases": list(raw.get("aliases", [])),
                        "statement": raw["statement"]}
            else:
                subject, answer, *rest = raw
                fill = {"subject": subject, "answer": answer}
                fact = {"prompt": _capitalize(cat["prompt"].format(**fill)), "answer": answer,
                        "aliases": list(rest[0]) if rest else [],
                        "statement": _capitalize(cat["statement"].format(**fill))}
            if cat.get("surname_alias") and " " in fact["answer"]:
                fact["aliases"].append(fact["answer"].rsplit(" ", 1)[1])
            out.append({"category": category, **fact})
    return out


def build(facts: list[dict]) -> dict[str, list[dict]]:
    """``{file name: records}``; deterministic (distractors from a fixed-seed generator per fact)."""
    by_cat: dict[str, list[tuple[int, dict]]] = {}  # category -> [(index within the category, fact)]
    for fact in facts:
        members = by_cat.setdefault(fact["category"], [])
        members.append((len(members), fact))
    answers = {c: list(dict.fromkeys(f["answer"] for _, f in fs)) for c, fs in by_cat.items()}
    probed = {c: [(i, f) for i, f in fs if i % BACKGROUND_EVERY != BACKGROUND_EVERY - 1] for c, fs in by_cat.items()}
    out: dict[str, list[dict]] = {name: [] for name in FILES}
    for fs in by_cat.values():
        out["background.jsonl"] += [{"text": f["statement"]} for i, f in fs if i % BACKGROUND_EVERY == BACKGROUND_EVERY - 1]
    for row in zip_longest(*probed.values()):
        for entry in row:
            if entry is None:
                continue
            i, f = entry
            fid = f"{f['category']}-{i:03d}"
            rng = random.Random(f"clbench:real_knowledge:{fid}")
            distractors = rng.sample([a for a in answers[f["category"]] if a != f["answer"]], N_CHOICES - 1)
            choices = distractors + [f["answer"]]
            rng.shuffle(choices)
            base = {"id": fid, "category": f["category"], "prompt": f["prompt"]}
            out["qa.jsonl"].append({**base, "answer": f["answer"], "aliases": f["aliases"]})
            out["mc.jsonl"].append({**base, "choices": choices, "label": choices.index(f["answer"])})
            out["ppl.jsonl"].append({"id": fid, "category": f["category"], "text": f["statement"]})
    return out


def render(recs: list[dict]) -> str:
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in recs)


def main() -> None:
    for name, recs in build(load_facts()).items():
        (HERE / name).write_text(render(recs), encoding="utf-8")
        print(f"wrote {len(recs)} records to {HERE / name}")


if __name__ == "__main__":
    main()
