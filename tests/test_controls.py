"""The literature's controls beside the nested mechanisms (issue 24): LoRA (or full fine-tuning) on the top
blocks only (freeze_bottom; Zheng et al. 2025)."""

from __future__ import annotations

import pytest
import torch

from clbench.config.experiment import TrainConfig
from clbench.train.step import optimizer_step
from tests.nested_helpers import begin, make, tiny_llama, token_batch


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_freeze_bottom_leaves_the_first_blocks_as_pretrained(mode):
    """The literature's control (Zheng et al. 2025): LoRA (or full fine-tuning) on the top blocks only."""
    base = tiny_llama(layers=4, seed=5)
    s, model = make("sft", {"mode": mode, "freeze_bottom": 2}, model=tiny_llama(layers=4, seed=5),
                    train=TrainConfig(lr=1e-2))
    trained_blocks = {int(n.split(".layers.")[1].split(".")[0]) for n in s.trainable if ".layers." in n}
    assert trained_blocks == {2, 3}
    assert not any("embed_tokens" in n for n in s.trainable)
    if mode == "lora":
        assert len(s.trainable) == 2 * 2 * 7  # A and B of the 7 linear layers of each of the two top blocks
    opt = s.backend.make_optimizer(s, model, s.train)
    begin(s, model)
    for step in range(1, 4):
        optimizer_step(s, model, opt, [token_batch(step)], step, step, 1e-2, 1.0)
    weights = dict(base.named_parameters())
    merged = model.merge_and_unload() if mode == "lora" else model
    for name, p in merged.named_parameters():
        if ".layers.0." in name or ".layers.1." in name or "embed_tokens" in name:
            assert torch.equal(p, weights[name]), name
    assert any(not torch.equal(p, weights[n]) for n, p in merged.named_parameters() if ".layers.3." in n)


def test_freeze_bottom_must_leave_a_block_to_train():
    from clbench.errors import ConfigError

    with pytest.raises(ConfigError, match="freeze_bottom"):
        make("sft", {"freeze_bottom": 4}, model=tiny_llama(layers=4))
