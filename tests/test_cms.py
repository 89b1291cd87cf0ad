"""CMS: chunk accumulation against eq. 71 with plain SGD, both forms, the adapter's identity start."""

from __future__ import annotations

import pytest
import torch

from clbench.config.experiment import TrainConfig
from clbench.errors import ConfigError
from clbench.train import registry
from tests.nested_helpers import begin, make, snapshot, tiny_llama, token_batch, train_step

ETA = 0.1


def run_recording_grads(s, model, opt, steps, seed=0):
    """Train ``steps`` steps; per step the raw gradients (before the strategy sees them) and the
    parameters after the update."""
    grads, params = [], []
    apply_update = s.apply_update

    def recording(ctx):
        grads.append({n: g.detach().clone() for n, g in ctx.grads.items()})
        return apply_update(ctx)

    s.apply_update = recording
    try:
        for step in range(1, steps + 1):
            train_step(s, model, opt, step, [token_batch(seed + step)])
            params.append(snapshot(s.trainable))
    finally:
        del s.apply_update
    assert all(set(g) == set(s.trainable) for g in grads)  # accumulate: every level's gradient, every step
    return grads, params


@pytest.mark.parametrize("scale,factor", [("inverse_chunk", "1/C"), ("mean", "1/C"), ("none", "1")])
def test_sgd_change_at_a_boundary_is_the_scaled_chunk_sum(scale, factor):
    s, model = make("cms", {"scale": scale}, model=tiny_llama(dtype=torch.float64), train=TrainConfig(lr=ETA))
    begin(s, model)
    opt = torch.optim.SGD(s.backend.param_groups(s, ETA), lr=ETA)
    start = snapshot(s.trainable)
    grads, params = run_recording_grads(s, model, opt, 8)
    for level, chunk in enumerate((1, 2, 4)):
        names = s.updater.members(level)
        assert names
        prev = start
        for step in range(1, 9):
            now = params[step - 1]
            if step % chunk:
                assert all(torch.equal(now[n], prev[n]) for n in names), (level, step)  # frozen inside a chunk
                continue
            c = chunk if factor == "1/C" else 1
            for n in names:
                chunk_sum = sum(grads[k][n] for k in range(step - chunk, step))
                assert torch.allclose(now[n] - prev[n], -(ETA / c) * chunk_sum, rtol=1e-9, atol=1e-13), (level, step)
            prev = now


def test_inverse_chunk_scales_the_learning_rate_of_each_level():
    s, _ = make("cms", {"scale": "inverse_chunk", "chunk_sizes": [1, 4, 16]}, train=TrainConfig(lr=0.8))
    groups = s.backend.param_groups(s, 0.8)
    assert [g["lr"] for g in groups] == [0.8, 0.2, 0.05]
    assert sum(len(g["params"]) for g in groups) == len(s.trainable)
    assert len(make("cms")[0].param_groups()) == 1


def test_adam_state_advances_only_at_chunk_boundaries():
    s, model = make("cms")
    begin(s, model)
    opt = torch.optim.AdamW(s.backend.param_groups(s, 1e-2), lr=1e-2, weight_decay=0.1)
    run_recording_grads(s, model, opt, 8)
    for level, chunk in enumerate((1, 2, 4)):
        assert {int(opt.state[s.trainable[n]]["step"]) for n in s.updater.members(level)} == {8 // chunk}
    diag = s.diagnostics()["tiers"]
    assert diag["semantics"] == "accumulate" and [t["steps"] for t in diag["tiers"]][2] == [4, 8]


def test_on_the_task_clock_a_partial_chunk_is_dropped_at_the_end_of_a_task():
    s, model = make("cms", {"chunk_sizes": [1, 4], "clock": "task"}, model=tiny_llama(dtype=torch.float64), train=TrainConfig(lr=ETA))
    opt = torch.optim.SGD(s.backend.param_groups(s, ETA), lr=ETA)
    begin(s, model, 1)
    run_recording_grads(s, model, opt, 6)  # steps 5-6 are summed for level 1 but never applied
    s.after_task(None, model)
    begin(s, model, 2)
    before = snapshot(s.trainable)
    grads, params = run_recording_grads(s, model, opt, 4, seed=100)
    for n in s.updater.members(1):
        expected = -ETA * sum(g[n] for g in grads)  # scale none: the new chunk's sum alone
        assert torch.allclose(params[3][n] - before[n], expected, rtol=1e-9, atol=1e-13)


def test_adapter_starts_as_the_base_model_and_trains_only_the_chain():
    base = tiny_llama(seed=3)
    batch = token_batch(0)
    with torch.no_grad():
        expected = base(**batch).logits
    s, model = make("cms", {"form": "adapter", "adapter_hidden": 8}, model=tiny_llama(seed=3))
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, expected)  # zero-initialised output: identical start
    assert len(s.trainable) == 4 * 3 * 4  # blocks x levels x (up, down) x (weight, bias)
    assert all(".levels." in n for n in s.trainable)
    assert s.updater.tier_map == {n: int(n.split(".levels.")[1].split(".")[0]) for n in s.trainable}
    assert set(s.checkpoint_tensors(model)) == set(s.trainable)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if n not in s.trainable}
    begin(s, model)
    opt = torch.optim.AdamW(s.backend.param_groups(s, 1e-2), lr=1e-2)
    start = snapshot(s.trainable)
    _, params = run_recording_grads(s, model, opt, 4)
    level2_down = [n for n in s.updater.members(2) if ".down." in n]
    assert all(torch.equal(params[2][n], start[n]) for n in level2_down)  # steps 1-3: accumulating
    assert all(not torch.equal(params[3][n], start[n]) for n in level2_down)  # step 4: applied
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)


def test_bad_cms_options_name_the_field():
    cms = registry.get("cms")
    with pytest.raises(ConfigError, match=r"x\.chunk_sizes"):
        cms.options_from({"chunk_sizes": [1, 0]}, "x")
    with pytest.raises(ConfigError, match=r"x\.mode"):
        cms.options_from({"form": "adapter", "mode": "full"}, "x")
    with pytest.raises(ConfigError, match="allowed: inverse_chunk, mean, none"):
        cms.options_from({"scale": "sqrt"}, "x")
