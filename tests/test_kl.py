"""The KL diagnostic (clbench/eval/kl.py): hand-computed on a model with fixed next-token distributions,
zero for an unchanged model, and torch.distributions' KL for a changed one."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch

from clbench.eval.kl import KLFromBase, kl_texts, mean_kl
from clbench.eval.torch_lm import TorchLM


class FixedLogits(torch.nn.Module):
    """A "language model" whose next-token distribution is ``probs`` at every position."""

    def __init__(self, probs):
        super().__init__()
        self.logp = torch.nn.Parameter(torch.tensor(probs).log())

    def forward(self, input_ids, attention_mask=None, **_):
        return SimpleNamespace(logits=self.logp.expand(*input_ids.shape, -1))


TEXTS = ["Paris is the capital city of France.", "Water boils at one hundred degrees.", "Hi."]


def test_kl_equals_the_hand_computed_value(micro_model):
    _, tok = micro_model
    # KL((1/2, 1/4, 1/4) ‖ (1/4, 1/4, 1/2)) = 1/2 ln 2 + 1/4 ln(1/2) = ln 2 / 4 at every position
    base = TorchLM(FixedLogits([0.5, 0.25, 0.25]), tok, batch_size=2)
    now = TorchLM(FixedLogits([0.25, 0.25, 0.5]), tok, batch_size=2)
    kl = KLFromBase(TEXTS, base)
    got = kl(now)
    n = sum(len(tok(t)["input_ids"]) - 1 for t in TEXTS)  # positions that predict a token of their text
    assert got == {"kl_base": pytest.approx(math.log(2) / 4, rel=1e-6), "kl_texts": 3, "kl_tokens": n}
    assert kl(base)["kl_base"] == 0.0
    # the direction: KL(sharp ‖ uniform) = ln 3 − H(sharp); KL(uniform ‖ sharp) is another number
    sharp = TorchLM(FixedLogits([0.8, 0.1, 0.1]), tok)
    uniform = TorchLM(FixedLogits([1 / 3, 1 / 3, 1 / 3]), tok)
    entropy = -(0.8 * math.log(0.8) + 0.2 * math.log(0.1))
    assert KLFromBase(TEXTS, sharp)(uniform)["kl_base"] == pytest.approx(math.log(3) - entropy, rel=1e-6)
    assert KLFromBase(TEXTS, uniform)(sharp)["kl_base"] == pytest.approx(
        math.log(1 / 3) - (math.log(0.8) + 2 * math.log(0.1)) / 3, rel=1e-6)


def test_kl_of_a_real_tiny_model_is_zero_unchanged_and_torch_distributions_kl_when_changed(micro_model):
    model, tok = micro_model
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.model.layers[0].mlp.down_proj.weight.mul_(1.5)
    with TorchLM(model, tok, batch_size=2) as base:
        kl = KLFromBase(TEXTS, base)
        assert kl(base)["kl_base"] == 0.0
    with TorchLM(changed, tok, batch_size=2) as view:
        got = kl(view)["kl_base"]
    expected, n = 0.0, 0
    with torch.no_grad():
        for text in TEXTS:
            ids = torch.tensor([tok(text)["input_ids"]])
            p = torch.distributions.Categorical(logits=model(input_ids=ids).logits[0, :-1].double())
            q = torch.distributions.Categorical(logits=changed(input_ids=ids).logits[0, :-1].double())
            expected += float(torch.distributions.kl_divergence(p, q).sum())
            n += ids.shape[1] - 1
    assert got > 1e-4 and got == pytest.approx(expected / n, rel=1e-4)


def test_mean_kl_refuses_mismatched_distributions():
    with pytest.raises(ValueError, match="texts"):
        mean_kl([torch.zeros(2, 3)], [])
    with pytest.raises(ValueError, match="shape"):
        mean_kl([torch.zeros(2, 3)], [torch.zeros(3, 3)])


def test_the_kl_texts_are_the_pretrained_tasks_perplexity_probes(micro_stream):
    texts = kl_texts(micro_stream)
    general = next(t for t in micro_stream.tasks if t.pretrained)
    ppl = next(s for s in general.probes if s.kind == "perplexity")
    assert texts and texts == [item["text"] for item in ppl.items][:64]


def test_every_trained_row_of_a_run_records_its_kl_zero_for_a_model_that_never_changed(micro_cfg):
    """The run writes ``kl`` into each trained task's row: 0 exactly for ``frozen`` (nothing trains), more
    than 0 for ``sft``, the same texts and token count in every row."""
    from dataclasses import replace

    from clbench.config.experiment import StrategySpec
    from clbench.results.atomic import read_json
    from clbench.results.files import RunFiles
    from clbench.run.grid import run_grid

    cfg = replace(micro_cfg, strategies=(StrategySpec("sft"), StrategySpec("frozen")))
    run_grid(cfg, progress=False, echo=lambda *a: None)
    rows = {label: [read_json(RunFiles.of(cfg, "micro", label, 0).after(t)) for t in range(3)]
            for label in ("sft", "frozen")}
    for label in rows:
        assert "kl" not in rows[label][0]  # the pretrained task: the base row, no training
        assert [r["kl"]["kl_texts"] for r in rows[label][1:]] == [12, 12]  # general's perplexity items
        assert rows[label][1]["kl"]["kl_tokens"] == rows[label][2]["kl"]["kl_tokens"] > 0
    assert [r["kl"]["kl_base"] for r in rows["frozen"][1:]] == [0.0, 0.0]
    assert all(r["kl"]["kl_base"] > 1e-4 for r in rows["sft"][1:])
