"""Probe scoring rules, each pinned by a case a plausible wrong implementation gets wrong.

The scorers are fed a fixed-answer model view (the three methods of ``clbench.lm_view.LMView``
returning given values), so each test checks the scoring rule itself: normalisation of exact match,
the tie rule of multiple choice, the token weighting of perplexity. The last test checks the torch
view's ``token_nll`` against a forward pass computed here.
"""

from __future__ import annotations

import math

import pytest
import torch

from clbench.data.streams import ProbeSuite
from clbench.eval.probes import normalize, score_exact_match, score_multiple_choice, score_perplexity


class FixedAnswers:
    """A model view whose answers are given: generations, log-likelihoods, (summed NLL, tokens)."""

    def __init__(self, generations=(), loglikelihoods=(), nlls=()):
        self.generations, self.loglikelihoods, self.nlls = list(generations), list(loglikelihoods), list(nlls)
        self.asked: list = []

    def generate(self, prompts, max_new_tokens=12, until=()):
        self.asked.append(list(prompts))
        return self.generations[: len(prompts)]

    def loglikelihood(self, pairs):
        self.asked.append(list(pairs))
        return self.loglikelihoods[: len(pairs)]

    def token_nll(self, texts):
        self.asked.append(list(texts))
        return self.nlls[: len(texts)]


def qa(*answers: str) -> ProbeSuite:
    return ProbeSuite("qa", "exact_match", tuple({"id": i, "prompt": f"Q{i}:", "answer": a}
                                                  for i, a in enumerate(answers)))


@pytest.mark.parametrize("prediction,answer", [("Flim", "flim"), ("FLIM.", "Flim"), ("  flim  ", "Flim"),
                                               ('"Flim."', "Flim"), ("Dorn  Vell", "dorn vell")])
def test_exact_match_ignores_case_trailing_period_quotes_and_spacing(prediction, answer):
    res = score_exact_match(qa(answer), FixedAnswers([prediction]), 12)
    assert res.score == 1.0 and res.items[0]["correct"] is True


@pytest.mark.parametrize("prediction,answer", [("Flimm", "Flim"), ("Flim Dorn", "Flim"), ("F.lim", "Flim"),
                                               ("", "Flim")])
def test_exact_match_still_tells_different_answers_apart(prediction, answer):
    assert score_exact_match(qa(answer), FixedAnswers([prediction]), 12).score == 0.0


def test_normalize_rules():
    assert normalize(" The  Capital\tIS Flim. ") == "the capital is flim"
    assert normalize("3.5") == "3.5"  # only a trailing period goes
    assert normalize("'flim'") == "flim"


def test_exact_match_score_is_the_fraction_correct():
    res = score_exact_match(qa("a", "b", "c", "d"), FixedAnswers(["A", "x", "c.", "D"]), 12)
    assert res.score == pytest.approx(0.75) and [i["correct"] for i in res.items] == [True, False, True, True]
    assert res.n == 4


def mc(*labels_and_choices) -> ProbeSuite:
    return ProbeSuite("mc", "multiple_choice", tuple({"id": i, "prompt": f"P{i}:", "choices": list(c), "label": lab}
                                                      for i, (lab, c) in enumerate(labels_and_choices)))


def test_multiple_choice_ties_go_to_the_lowest_index():
    # item 0: choices 0 and 2 tie at the maximum; item 1: all three tie; item 2: clear winner at index 2
    suite = mc((0, "abc"), (1, "abc"), (2, "abc"))
    view = FixedAnswers(loglikelihoods=[-1.0, -3.0, -1.0, -2.0, -2.0, -2.0, -5.0, -4.0, -0.5])
    res = score_multiple_choice(suite, view)
    assert [i["prediction"] for i in res.items] == [0, 0, 2]
    assert [i["correct"] for i in res.items] == [True, False, True]
    assert res.score == pytest.approx(2 / 3)
    # the continuation is " " + choice after the prompt, every choice of every item asked once
    assert view.asked[0][:3] == [("P0:", " a"), ("P0:", " b"), ("P0:", " c")] and len(view.asked[0]) == 9


def test_multiple_choice_with_different_numbers_of_choices_keeps_items_aligned():
    suite = mc((1, "ab"), (0, "abcd"), (3, "abcd"))
    view = FixedAnswers(loglikelihoods=[-2.0, -1.0, -0.1, -3.0, -3.0, -3.0, -9.0, -9.0, -9.0, -1.0])
    res = score_multiple_choice(suite, view)
    assert [i["prediction"] for i in res.items] == [1, 0, 3] and res.score == 1.0


def test_perplexity_is_token_weighted_over_the_suite():
    """exp(Σ NLL / Σ tokens): a long text weighs more than a short one. Averaging per item (mean of
    per-item NLL per token, or mean of per-item perplexities) gives other numbers."""
    suite = ProbeSuite("ppl", "perplexity", ({"id": 0, "text": "short"}, {"id": 1, "text": "a much longer text"}))
    res = score_perplexity(suite, FixedAnswers(nlls=[(4.0, 2), (10.0, 10)]))
    assert res.score == pytest.approx(math.exp(14.0 / 12))
    assert res.score != pytest.approx(math.exp((4.0 / 2 + 10.0 / 10) / 2))
    assert res.score != pytest.approx((math.exp(2.0) + math.exp(1.0)) / 2)
    assert res.items == [{"id": 0, "nll": 4.0, "tokens": 2}, {"id": 1, "nll": 10.0, "tokens": 10}]


def test_torch_token_nll_is_the_summed_nll_of_every_predicted_token_whatever_the_batch(micro_model):
    """``TorchLM.token_nll`` on texts of different lengths: the summed NLL over every token after the
    first (EOS appended), computed here one text at a time without padding — batching them together
    (right padding) must change nothing."""
    from clbench.eval.torch_lm import TorchLM

    model, tok = micro_model
    texts = ["Zorbia has its capital at Flim.", "Flim.", "The capital of Quaxia is a city called Dorn."]
    expected = []
    for text in texts:
        ids = tok(text)["input_ids"] + [tok.eos_token_id]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1].float(), -1)
        expected.append((-sum(float(logp[k, ids[k + 1]]) for k in range(len(ids) - 1)), len(ids) - 1))
    with TorchLM(model, tok, batch_size=3) as lm:
        batched = lm.token_nll(texts)
    with TorchLM(model, tok, batch_size=1) as lm:
        single = lm.token_nll(texts)
    assert [n for _, n in batched] == [n for _, n in expected] == [n for _, n in single]
    assert len({n for _, n in expected}) == 3  # three different lengths: padding is really exercised
    for (got, _), (one, _), (want, _) in zip(batched, single, expected):
        assert got == pytest.approx(want, rel=1e-4) and one == pytest.approx(want, rel=1e-4)


def test_a_text_that_starts_with_bos_gets_no_second_one(micro_model):
    """The micro tokenizer adds BOS; a chat-templated prompt may already begin with it. Native scoring and
    the lm-eval adapter both encode such a text with a single BOS, the same ids as the text without it."""
    from clbench.eval.lm_eval_suite import ClbenchLM
    from clbench.eval.requests import encode_pair, encode_text

    model, tok = micro_model
    bos = tok.bos_token_id
    text = "The capital of Norland is"
    plain = encode_text(tok, text)
    assert plain[0] == bos and plain[1] != bos
    assert encode_text(tok, tok.bos_token + text) == plain
    ctx, cont = encode_pair(tok, tok.bos_token + text, " Velm")
    assert ctx == plain and cont == encode_pair(tok, text, " Velm")[1]
    lm = ClbenchLM(model, tok)
    assert lm.tok_encode(tok.bos_token + text) == plain == lm.tok_encode(text)
