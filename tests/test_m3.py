"""M3 (clbench.train.m3): Algorithm 1 against a hand computation, the slow chunk, masks, the AdamW
fallback, resumable state, and the trainer's ``train.optimizer: m3``."""

from __future__ import annotations

import copy

import pytest
import torch

from clbench.config.experiment import TrainConfig
from clbench.errors import ConfigError
from clbench.train.m3 import M3, QUINTIC, newton_schulz
from tests.nested_helpers import begin, make, token_batch, train_step

D = torch.float64


def ns_by_hand(m: torch.Tensor, steps: int) -> torch.Tensor:
    """The textbook cubic Newton–Schulz iteration, written as the reimplementation writes it."""
    x = m / (torch.linalg.matrix_norm(m) + 1e-7)
    eye = torch.eye(m.shape[1], dtype=m.dtype)
    for _ in range(steps):
        x = 0.5 * x @ (3.0 * eye - x.T @ x)
    return x


def test_three_steps_with_chunk_two_match_the_hand_computation():
    lr, b1, b2, b3, alpha, eps, T = 0.1, 0.9, 0.999, 0.5, 0.7, 1e-8, 2
    theta0 = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]], dtype=D)
    grads = [torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.8, -1.2]], dtype=D),
             torch.tensor([[-0.4, 1.1, 0.9], [2.0, -0.6, 0.1]], dtype=D),
             torch.tensor([[0.7, 0.2, -1.5], [-0.9, 1.3, 0.4]], dtype=D)]
    p = torch.nn.Parameter(theta0.clone())
    opt = M3([p], lr=lr, betas=(b1, b2, b3), alpha=alpha, eps=eps, ns_steps=T, slow_chunk=2)
    got = []
    for g in grads:
        p.grad = g.clone()
        opt.step()
        got.append(p.detach().clone())

    g1, g2, g3 = grads
    m1, v = b1 * g1, b2 * g1 ** 2
    th1 = theta0 - lr * ns_by_hand(m1, T) / (v.sqrt() + eps)  # O2 = 0 in the first chunk
    m1, v = m1 + b1 * g2, v + b2 * g2 ** 2
    th2 = th1 - lr * ns_by_hand(m1, T) / (v.sqrt() + eps)  # still O2 = 0: refreshed after this step
    o2 = ns_by_hand(b3 * (g1 + g2), T)  # M2 = β3·(g1 + g2) at step Ĉ = 2
    m1, v = m1 + b1 * g3, v + b2 * g3 ** 2
    th3 = th2 - lr * (ns_by_hand(m1, T) + alpha * o2) / (v.sqrt() + eps)
    for step, (a, b) in enumerate(zip(got, (th1, th2, th3)), 1):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12), step
    state = opt.state[p]
    assert torch.equal(state["chunk_sum"], g3)  # reset at step 2, then g3
    assert torch.allclose(state["m2"], b3 * (g1 + g2), rtol=0, atol=1e-15)


def test_weight_decay_on_a_matrix_is_decoupled_and_scaled_by_the_learning_rate():
    """Two steps on a 2-D weight with weight decay λ: θ ← θ·(1 − η·λ) − η·NS(M1)/(√V + ε), AdamW's decoupled
    decay before the step (not θ·(1 − λ), not decay folded into the gradient)."""
    lr, wd, b1, b2, eps, T = 0.05, 0.4, 0.9, 0.999, 1e-8, 3
    theta0 = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]], dtype=D)
    grads = [torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.8, -1.2]], dtype=D),
             torch.tensor([[-0.4, 1.1, 0.9], [2.0, -0.6, 0.1]], dtype=D)]
    p = torch.nn.Parameter(theta0.clone())
    opt = M3([p], lr=lr, betas=(b1, b2, 0.9), alpha=1.0, eps=eps, ns_steps=T, slow_chunk=100, weight_decay=wd)
    theta, m1, v = theta0.clone(), torch.zeros_like(theta0), torch.zeros_like(theta0)
    for g in grads:
        p.grad = g.clone()
        opt.step()
        m1, v = m1 + b1 * g, v + b2 * g ** 2
        theta = theta * (1 - lr * wd) - lr * ns_by_hand(m1, T) / (v.sqrt() + eps)  # O2 = 0: chunk of 100
        assert torch.allclose(p.detach(), theta, rtol=1e-12, atol=1e-12)


def test_slow_momentum_changes_only_at_multiples_of_the_chunk():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4, 3, dtype=D))
    opt = M3([p], lr=0.01, slow_chunk=3)
    changed_m2, changed_o2 = [], []
    prev_m2 = prev_o2 = None
    for step in range(1, 11):
        p.grad = torch.randn(4, 3, dtype=D)
        opt.step()
        st = opt.state[p]
        if prev_m2 is not None and not torch.equal(st["m2"], prev_m2):
            changed_m2.append(step)
        if prev_o2 is not None and not torch.equal(st["o2"], prev_o2):
            changed_o2.append(step)
        prev_m2, prev_o2 = st["m2"].clone(), st["o2"].clone()
    assert changed_m2 == [3, 6, 9]
    assert changed_o2 == [3, 6, 9]


def test_a_parameter_without_gradient_keeps_its_state_and_value():
    torch.manual_seed(1)
    a = torch.nn.Parameter(torch.randn(3, 3))
    b = torch.nn.Parameter(torch.randn(3, 2))
    bias = torch.nn.Parameter(torch.randn(3))
    opt = M3([a, b, bias], lr=0.05, slow_chunk=2, weight_decay=0.1)
    for p in (a, b, bias):
        p.grad = torch.randn_like(p)
    opt.step()
    before = {id(p): {k: (v.clone() if torch.is_tensor(v) else v) for k, v in opt.state[p].items()} for p in (b, bias)}
    values = (b.detach().clone(), bias.detach().clone())
    a.grad, b.grad, bias.grad = torch.randn_like(a), None, None  # b and bias: an inactive tier
    opt.step()
    for p, value in zip((b, bias), values):
        assert torch.equal(p.detach(), value)  # no update and no weight decay
        state = opt.state[p]
        for k, v in before[id(p)].items():
            assert torch.equal(state[k], v) if torch.is_tensor(v) else state[k] == v, k
    assert opt.state[a]["step"] == 2


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4), ()])
def test_other_shapes_fall_back_to_torch_adamw_bit_for_bit(shape):
    torch.manual_seed(2)
    init = torch.randn(shape)
    p, q = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    ours = M3([p], lr=0.02, betas=(0.8, 0.95, 0.9), eps=1e-6, weight_decay=0.3)
    ref = torch.optim.AdamW([q], lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.3)
    for _ in range(6):
        g = torch.randn(shape)
        p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
        assert torch.equal(p.detach(), q.detach())
    assert torch.equal(ours.state[p]["exp_avg_sq"], ref.state[q]["exp_avg_sq"])


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(3)
    params = [torch.nn.Parameter(torch.randn(4, 4)), torch.nn.Parameter(torch.randn(4))]
    opt = M3(params, lr=0.01, slow_chunk=2)
    grads = [[torch.randn_like(p) for p in params] for _ in range(6)]
    for gs in grads[:3]:
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
    saved = copy.deepcopy(opt.state_dict())  # as the checkpoint file holds it, not the live tensors
    clones = [torch.nn.Parameter(p.detach().clone()) for p in params]
    other = M3(clones, lr=0.01, slow_chunk=2)
    other.load_state_dict(saved)
    for gs in grads[3:]:
        for a, b, g in zip(params, clones, gs):
            a.grad, b.grad = g.clone(), g.clone()
        opt.step()
        other.step()
    assert all(torch.equal(a.detach(), b.detach()) for a, b in zip(params, clones))


def test_quintic_coefficients_are_torch_muons_iteration():
    muon = pytest.importorskip("torch.optim._muon")
    zeropower = getattr(muon, "_zeropower_via_newtonschulz", None)
    if zeropower is None:
        pytest.skip("this torch has no Muon Newton-Schulz")
    assert (muon.DEFAULT_A, muon.DEFAULT_B, muon.DEFAULT_C) == QUINTIC
    torch.manual_seed(4)
    for shape in ((6, 4), (4, 6)):
        g = torch.randn(shape)
        theirs = zeropower(g, QUINTIC, 5, 1e-7).float()  # torch computes in bfloat16
        ours = newton_schulz(g, 5, QUINTIC)  # float32: they differ by bfloat16 rounding (~1e-2), no more
        assert torch.allclose(ours, theirs, atol=0.03), shape
        assert not torch.allclose(newton_schulz(g, 5), theirs, atol=0.03)  # the cubic iteration is another


def test_cubic_newton_schulz_converges_to_the_polar_factor():
    torch.manual_seed(5)
    g = torch.randn(5, 3, dtype=D)
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    assert torch.allclose(newton_schulz(g, 40), u @ vh, atol=1e-8)


def test_trainer_builds_m3_and_tier_masks_reach_it():
    train = TrainConfig(optimizer="m3", lr=1e-3)
    s, model = make("layer_tiers", {"frequencies": [1, 2]}, train=train)
    opt = s.backend.make_optimizer(s, model, train)
    assert isinstance(opt, M3)
    begin(s, model)
    train_step(s, model, opt, 1, [token_batch(0)])
    slow = s.updater.members(1)
    fast = s.updater.members(0)
    assert all(s.trainable[n] not in opt.state for n in slow)  # tier 1 inactive at step 1: no state at all
    assert all(opt.state[s.trainable[n]]["step"] == 1 for n in fast)
    train_step(s, model, opt, 2, [token_batch(1)])
    assert all(opt.state[s.trainable[n]]["step"] == 1 for n in slow)
    assert all(opt.state[s.trainable[n]]["step"] == 2 for n in fast)


def test_a_grid_row_trains_with_m3_through_its_train_override(micro_cache, micro_base_dir, tmp_path):
    import json

    from safetensors.torch import load_file

    from clbench.results.files import RunFiles
    from clbench.run.grid import run_grid
    from tests.conftest import micro_config

    cfg = micro_config(tmp_path, cache_dir=micro_cache,
                       strategies="[sft, {name: sft, label: sft-m3, train: {optimizer: m3, m3_slow_chunk: 2}}]")
    runs = {RunFiles(p).root.parent.name: RunFiles(p) for p, _ in run_grid(cfg, progress=False, echo=lambda *a: None)}
    record = json.loads(runs["sft-m3"].config.read_text())
    assert record["train"]["optimizer"] == "m3" and record["train"]["m3_slow_chunk"] == 2
    plain = json.loads(runs["sft"].config.read_text())
    assert plain["train"]["optimizer"] == "adamw"
    a = load_file(runs["sft"].checkpoint(2) / "adapter.safetensors")
    b = load_file(runs["sft-m3"].checkpoint(2) / "adapter.safetensors")
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)
    # a record written before the optimizer fields existed is the same experiment as today's: skipped
    old = {**plain, "train": {k: v for k, v in plain["train"].items() if k != "optimizer" and not k.startswith("m3_")}}
    runs["sft"].config.write_text(json.dumps(old))
    statuses = {RunFiles(p).root.parent.name: st for p, st in run_grid(cfg, progress=False, echo=lambda *a: None)}
    assert statuses == {"sft": "skipped", "sft-m3": "skipped"}
    with pytest.raises(ConfigError, match="optimizer"):
        run_grid(micro_config(tmp_path / "bad", cache_dir=micro_cache,
                              strategies="[{name: sft, label: x, train: {optimizer: sgd}}]"),
                 progress=False, echo=lambda *a: None)


def test_the_mlx_backend_refuses_m3_the_memory_and_activation_l2_before_running():
    from clbench.config.experiment import load_config
    from clbench.run.plan import plan

    for grid, field in (("[{name: sft, label: a, train: {optimizer: m3}}]", "optimizer"),
                        ("[{name: cms, options: {form: memory}}]", "cms"),
                        ("[{name: sft, label: b, with: [activation_l2]}]", "activation_l2")):
        with pytest.raises(ConfigError, match=f"{field}.*model.backend: mlx"):
            plan(load_config(None, ["model.backend=mlx", "stream=micro", f"strategies={grid}"]))
