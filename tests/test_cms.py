"""CMS: chunk accumulation against eq. 71 with plain SGD, both forms, the adapter's identity start."""

from __future__ import annotations

import contextlib

import pytest
import torch

from clbench.config.experiment import TrainConfig
from clbench.errors import ConfigError
from clbench.train import registry
from tests.nested_helpers import begin, make, snapshot, tiny_llama, token_batch, train_step

ETA = 0.1


@contextlib.contextmanager
def recording_grads(s):
    """Inside, every step's raw gradients (before the strategy sees them) are appended to the list yielded."""
    grads = []
    apply_update = s.apply_update

    def recording(ctx):
        grads.append({n: g.detach().clone() for n, g in ctx.grads.items()})
        return apply_update(ctx)

    s.apply_update = recording
    try:
        yield grads
    finally:
        del s.apply_update


def run_recording_grads(s, model, opt, steps, seed=0):
    """Train ``steps`` steps; per step the raw gradients (before the strategy sees them) and the
    parameters after the update."""
    params = []
    with recording_grads(s) as grads:
        for step in range(1, steps + 1):
            train_step(s, model, opt, step, [token_batch(seed + step)])
            params.append(snapshot(s.trainable))
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


def _global_task(s, model, opt, task: int, steps: int, first_global: int):
    """One task of ``steps`` optimizer steps at global steps ``first_global + 1 ...``; per step the raw
    gradients and the parameters after it."""
    from clbench.train.step import optimizer_step

    params = []
    begin(s, model, task)
    with recording_grads(s) as grads:
        for step in range(1, steps + 1):
            g = first_global + step
            optimizer_step(s, model, opt, [token_batch(g)], step, g, ETA, 0.0)
            params.append(snapshot(s.trainable))
    s.after_task(None, model)
    return grads, params


def test_on_the_global_clock_a_chunk_spanning_a_task_boundary_is_applied_whole():
    """Level 1 (chunk 4) of a global-clock CMS, tasks of 3 steps: its chunk holds global steps 1-3 of task
    1 and step 4 of task 2, and at global step 4 it changes by −η·(g1 + g2 + g3 + g4) — not by task 2's
    gradient alone (the chunk dropped at the boundary) — and at no other step."""
    s, model = make("cms", {"chunk_sizes": [1, 4], "clock": "global"}, model=tiny_llama(dtype=torch.float64),
                    train=TrainConfig(lr=ETA))
    opt = torch.optim.SGD(s.backend.param_groups(s, ETA), lr=ETA)
    start = snapshot(s.trainable)
    g1, p1 = _global_task(s, model, opt, 1, 3, 0)
    assert s.updater.pending == [0, 3]  # three steps summed, carried into task 2
    g2, p2 = _global_task(s, model, opt, 2, 3, 3)
    grads, params = g1 + g2, p1 + p2
    slow = s.updater.members(1)
    assert slow
    for k in (0, 1, 2):  # global steps 1-3: accumulating
        assert all(torch.equal(params[k][n], start[n]) for n in slow)
    for n in slow:
        chunk = sum(grads[k][n] for k in range(4))
        assert torch.allclose(params[3][n] - start[n], -ETA * chunk, rtol=1e-9, atol=1e-13), n
        assert torch.equal(params[5][n], params[3][n])  # steps 5-6: the next chunk, not applied yet
    change = torch.cat([(params[3][n] - start[n]).flatten() for n in slow])
    assert (change + ETA * torch.cat([grads[3][n].flatten() for n in slow])).norm() > 0.1 * change.norm()


def test_a_resumed_mean_scaled_chunk_divides_by_every_step_it_holds():
    """scale: mean on the global clock, resumed between the tasks from the strategy state (torch.save'd):
    the chunk's pending count comes back with its sum, so global step 4 applies −η·(g1 + … + g4)/4, the
    same bit for bit as without the interruption (a count not restored would divide by 1)."""
    import io

    opts = {"chunk_sizes": [1, 4], "clock": "global", "scale": "mean"}

    def fresh():
        s, model = make("cms", opts, model=tiny_llama(dtype=torch.float64), train=TrainConfig(lr=ETA))
        return s, model, torch.optim.SGD(s.backend.param_groups(s, ETA), lr=ETA)

    s, model, opt = fresh()
    start = snapshot(s.trainable)
    g1, _ = _global_task(s, model, opt, 1, 3, 0)
    buf = io.BytesIO()
    torch.save(s.state_dict(), buf)
    after_task_1 = snapshot(s.trainable)
    _, p2 = _global_task(s, model, opt, 2, 1, 3)  # uninterrupted: global step 4

    r, rmodel, ropt = fresh()
    with torch.no_grad():
        for n, p in r.trainable.items():
            p.copy_(after_task_1[n])
    buf.seek(0)
    r.load_state_dict(torch.load(buf, weights_only=True))
    assert r.updater.pending == [0, 3]
    rg, rp = _global_task(r, rmodel, ropt, 2, 1, 3)
    for n in s.updater.members(1):
        assert torch.equal(rp[0][n], p2[0][n]), n
        chunk = sum(g[n] for g in g1) + rg[0][n]
        assert torch.allclose(rp[0][n] - start[n], -ETA * chunk / 4, rtol=1e-9, atol=1e-13), n
