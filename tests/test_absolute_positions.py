"""Evaluation on a model with absolute position embeddings (GPT-2 shaped). Every model the other tests
score uses rotary positions, where shifting all of a sequence's positions by the same amount changes
nothing — so a left-padded prompt whose positions count the padding, or a token-tree node placed at its
index in the row instead of its position in its own sequence, would pass there. Here the position
embeddings are scaled up until they decide the answers: each request must be scored exactly as alone."""

from __future__ import annotations

import pytest
import torch

from clbench.eval.torch_lm import TorchLM


@pytest.fixture
def gpt2(micro_model):
    from transformers import GPT2Config, GPT2LMHeadModel

    _, tok = micro_model
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():
        model.transformer.wpe.weight.mul_(20.0)  # where a token sits weighs more than what it is
    model.eval()
    return model, tok


PROMPTS = ["a", "the capital of Norland is", "Q: which drug treats the grey fever? A:", "notes", "b c"]


def test_left_padded_prompts_are_answered_as_alone(gpt2):
    model, tok = gpt2
    with torch.no_grad():
        with TorchLM(model, tok, batch_size=len(PROMPTS)) as lm:
            assert lm._lean_decoding()  # clbench's own decoding loop, not generate
            batched = lm.generate(PROMPTS, max_new_tokens=6)
        alone = []
        for p in PROMPTS:
            with TorchLM(model, tok, batch_size=1) as lm:
                alone.extend(lm.generate([p], max_new_tokens=6))
            ids = torch.tensor([tok(p)["input_ids"]])
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            assert alone[-1] == tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).split("\n")[0]
    assert batched == alone
    assert len(set(alone)) > 1


def test_token_tree_scores_are_each_sequence_scored_alone(gpt2):
    model, tok = gpt2
    pairs = [(p, c) for p in PROMPTS[1:4] for c in (" one pill a day", " Velm", " rest")]
    with torch.no_grad(), TorchLM(model, tok, batch_size=4) as lm:
        tree = lm.loglikelihood(pairs)
        alone = []
        for context, continuation in pairs:
            ctx = lm.ids(context)
            whole = tok(context + continuation)["input_ids"]
            logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), -1)
            alone.append(float(sum(logp[t - 1, whole[t]] for t in range(len(ctx), len(whole)))))
        nll = lm.token_nll(PROMPTS)
        for text, (value, count) in zip(PROMPTS, nll):
            ids = tok(text)["input_ids"] + [tok.eos_token_id]
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
            assert count == len(ids) - 1
            assert value == pytest.approx(-float(sum(logp[t - 1, ids[t]] for t in range(1, len(ids)))), rel=1e-4)
    assert tree == pytest.approx(alone, rel=1e-4, abs=1e-4)
