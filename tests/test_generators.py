"""The generated stream: deterministic, fictional, and probes ask paraphrases never trained for that fact."""

import re

import pytest

from clbench.tasks.generators.build import QA_PROMPT, build_domain
from clbench.tasks.generators.domains import DOMAINS


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_deterministic_in_seed(domain):
    assert build_domain(domain, 5, seed=3) == build_domain(domain, 5, seed=3)
    assert build_domain(domain, 5, seed=3) != build_domain(domain, 5, seed=4)


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_probes_are_held_out_paraphrases(domain):
    data = build_domain(domain, 8, seed=0)
    train_prompts = {r["prompt"] for r in data["train"] if "prompt" in r}
    train_texts = {r["text"] for r in data["train"] if "text" in r}
    for qa, ppl in zip(data["qa"], data["ppl"]):
        assert qa["prompt"] not in train_prompts  # the probe's question is never trained for this fact
        assert ppl["text"] not in train_texts
        # the fact itself is in training (statements and other question forms give the answer)
        answers = [r["completion"].strip() for r in data["train"] if "prompt" in r]
        assert qa["answer"] in answers
    # 3 of 4 statement templates + 3 of 4 question templates per fact
    assert len(data["train"]) == 6 * len(data["qa"])


def test_question_templates_are_shared_across_facts():
    data = build_domain("general", 12, seed=0)
    def skeleton(p):
        return re.sub(r"[A-Z][a-z]+ia\b", "X", p)
    trained = {skeleton(r["prompt"]) for r in data["train"] if "prompt" in r}
    assert all(skeleton(q["prompt"]) in trained for q in data["qa"])


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_multiple_choice_items(domain):
    for item, qa in zip(build_domain(domain, 6, seed=1)["mc"], build_domain(domain, 6, seed=1)["qa"]):
        assert item["choices"][item["label"]] == qa["answer"]
        assert len(set(item["choices"])) == len(item["choices"]) == 4


def test_domains_are_independent():
    a = build_domain("medical", 4, seed=0)
    assert build_domain("medical", 4, seed=0) == a
    assert build_domain("notes", 9, seed=0)["qa"] != build_domain("notes", 4, seed=0)["qa"]


def test_qa_prompt_format_matches_training():
    data = build_domain("notes", 3, seed=0)
    assert all(q["prompt"].startswith("Question: ") and q["prompt"].endswith("\nAnswer:") for q in data["qa"])
    assert QA_PROMPT.format(q="x") == "Question: x\nAnswer:"
