"""The surprise plugin: gradients equal explicit references (float64), schedule, composition, errors."""

from __future__ import annotations

import pytest
import torch

from clbench.config.experiment import TrainConfig
from clbench.errors import ConfigError
from clbench.modeling.lm_loss import causal_lm_loss
from clbench.train import registry
from clbench.train.surprise import aux_grad, aux_loss
from tests.nested_helpers import begin, make, make_with, snapshot, tiny_llama, token_batch, train_step

BATCH = token_batch(5, n=3, length=9)


def surprise(options: dict, train: TrainConfig | None = None, layers: int = 3, base: str = "sft",
             base_options: dict | None = None):
    """``{name: <base>, options: <base_options>, with: [{name: surprise, options: <options>}]}``."""
    s, model = make_with(base, base_options, [("surprise", options)],
                         model=tiny_llama(layers=layers, seed=1, dtype=torch.float64), train=train)
    # move LoRA B off zero so that every parameter has a non-trivial gradient
    with torch.no_grad():
        for n, p in s.trainable.items():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(n)), dtype=p.dtype) * 0.1)
    begin(s, model)
    return s, model


def strategy_grads(s, model, step: int = 1) -> tuple[dict, float]:
    """The gradient of one micro-batch as the trainer computes it (``grad_names`` frozen out, the loss
    backpropagated as it is)."""
    s.before_step(step)
    keep = s.grad_names(step)
    for n, p in s.trainable.items():
        p.requires_grad_(keep is None or n in keep)
    out = s.loss(model, BATCH)
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in s.trainable.items() if p.grad is not None}
    for p in s.trainable.values():
        p.grad = None
        p.requires_grad_(True)
    return grads, float(out.loss.detach())


def forward_capturing(model, layers: list[int]):
    from clbench.modeling.blocks import decoder_blocks

    hidden, blocks = {}, decoder_blocks(model)
    handles = [blocks[i].register_forward_hook(lambda m, a, o, i=i: hidden.__setitem__(i, o)) for i in layers]
    loss = causal_lm_loss(model, BATCH)  # the torch backend's lm_loss
    for h in handles:
        h.remove()
    return loss, [hidden[i] for i in layers]


def explicit_detached(s, model, layers, weights, names=None) -> tuple[dict, float, list[float]]:
    """Autograd of L + Σ λ mean((y − c)²) where c = ∇_y L was computed beforehand, as a constant."""
    names = list(names or s.trainable)
    params = [s.trainable[n] for n in names]
    loss, ys = forward_capturing(model, layers)
    consts = [g.detach() for g in torch.autograd.grad(loss, ys)]
    loss, ys = forward_capturing(model, layers)
    terms = [w * ((y - c) ** 2).mean() for y, c, w in zip(ys, consts, weights)]
    grads = torch.autograd.grad(loss + sum(terms), params)
    return dict(zip(names, grads)), float(loss.detach()), [float(t.detach()) for t in terms]


def explicit_full(s, model, layers, weights) -> dict:
    """Double backward: ∇_θ of L + Σ λ mean((y − ∇_y L)²) with ∇_y L built by create_graph=True."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    params = list(s.trainable.values())
    with sdpa_kernel([SDPBackend.MATH]):  # the fused kernels have no double backward
        loss, ys = forward_capturing(model, layers)
    signals = torch.autograd.grad(loss, ys, create_graph=True)
    total = loss + sum(w * ((y - g) ** 2).mean() for y, g, w in zip(ys, signals, weights))
    return dict(zip(s.trainable, torch.autograd.grad(total, params)))


def assert_same(grads: dict, ref: dict) -> None:
    assert set(grads) == set(ref)
    for n, expected in ref.items():
        assert torch.allclose(grads[n], expected, rtol=1e-9, atol=1e-14), n


def test_pure_aux_gradient_is_the_derivative_of_the_aux_loss():
    y = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, 4, dtype=torch.float64)
    (g,) = torch.autograd.grad(aux_loss(y, t, 0.7), y)
    assert torch.allclose(g, aux_grad(y.detach(), t, 0.7))
    assert float(aux_loss(y, t, 0.7).detach()) == pytest.approx(0.7 * float(((y - t) ** 2).sum().detach()) / 24)


def test_detached_one_layer_in_one_pass_equals_the_explicit_loss():
    s, model = surprise({"layers": [1], "weights": [0.3]})
    grads, logged = strategy_grads(s, model)
    ref, loss, terms = explicit_detached(s, model, [1], [0.3])
    assert_same(grads, ref)
    assert logged == pytest.approx(loss, rel=1e-12)  # the trainer logs the main loss
    assert s.step_log()["surprise_aux_l1"] == pytest.approx(terms[0], rel=1e-9)


def test_a_block_output_hook_sees_its_micro_batchs_gradient_under_accumulation():
    """With grad_accum 2 the step backpropagates each micro-batch's loss as it is and averages the
    gradients once: a hook on a block's output sees that micro-batch's ∇_y L (what surprise's target and
    the local rule's δ are), and two copies of one batch give that batch's gradients, bit for bit."""
    from clbench.modeling.blocks import decoder_blocks

    s, model = make("sft", {"mode": "full"}, model=tiny_llama(layers=3, seed=1, dtype=torch.float64))
    seen: list = []

    def capture(module, args, output):
        (output[0] if isinstance(output, tuple) else output).register_hook(lambda g: seen.append(g.clone()))

    handle = decoder_blocks(model)[1].register_forward_hook(capture)
    grads = {}
    for k in (1, 2):
        _, _, g = s.backend.forward_backward(model, s.trainable, s.loss, [BATCH] * k, None)
        grads[k] = {n: t.clone() for n, t in g.items()}
        s.backend.clear_gradients(s.trainable)
    handle.remove()
    assert len(seen) == 3 and torch.equal(seen[1], seen[0]) and torch.equal(seen[2], seen[0])
    assert grads[1].keys() == grads[2].keys() and all(torch.equal(grads[2][n], grads[1][n]) for n in grads[1])


@pytest.mark.parametrize("layers", [[1], [0, 2]])
@pytest.mark.parametrize("plugin", ["surprise", "activation_l2"])
def test_accumulating_two_copies_of_a_batch_is_one_step_on_it(plugin, layers):
    """surprise (one-pass hook and extra pass) and activation_l2 with grad_accum 2 on two copies of a batch:
    the same gradients, bit for bit, and the same logged terms as grad_accum 1 on the batch."""
    steps = {}
    for k in (1, 2):
        s, model = make_with("sft", {"mode": "full"}, [(plugin, {"layers": layers, "weights": [0.3]})],
                             model=tiny_llama(layers=3, seed=1, dtype=torch.float64), train=TrainConfig(grad_accum=k))
        begin(s, model)
        s.before_step(1)
        _, _, g = s.backend.forward_backward(model, s.trainable, s.loss, [BATCH] * k, None)
        steps[k] = ({n: t.clone() for n, t in g.items()}, s.step_log())
    (g1, log1), (g2, log2) = steps[1], steps[2]
    assert g1.keys() == g2.keys() and all(torch.equal(g2[n], g1[n]) for n in g1)
    assert log2 == log1 and len(log1) == len(layers) * (2 if plugin == "surprise" else 1)  # surprise: term, ratio


def test_detached_several_layers_equals_the_explicit_loss():
    s, model = surprise({"layers": [0, 2], "weights": [0.3, 0.1]})
    grads, logged = strategy_grads(s, model)
    ref, loss, terms = explicit_detached(s, model, [0, 2], [0.3, 0.1])
    assert_same(grads, ref)
    assert logged == pytest.approx(loss, rel=1e-12)
    assert [s.step_log()["surprise_aux_l0"], s.step_log()["surprise_aux_l2"]] == pytest.approx(terms, rel=1e-9)


@pytest.mark.parametrize("layers,weights", [([1], [0.3]), ([0, -1], [0.3, 0.1])])
def test_full_equals_the_double_backward_reference(layers, weights):
    s, model = surprise({"layers": layers, "weights": weights, "target": "full"})
    grads, _ = strategy_grads(s, model)
    resolved = [i % 3 for i in layers]
    assert_same(grads, explicit_full(s, model, resolved, weights))
    detached, _, _ = explicit_detached(s, model, resolved, weights)
    deeper = [n for n in grads if ".layers.2." in n]  # after layer 0/1: only the second-order path reaches them
    assert any(not torch.allclose(grads[n], detached[n], rtol=1e-6, atol=0) for n in deeper)


def plain_grads(s, model) -> dict:
    loss = causal_lm_loss(model, BATCH)  # the torch backend's lm_loss
    return dict(zip(s.trainable, torch.autograd.grad(loss, list(s.trainable.values()))))


def test_every_n_and_the_switch():
    s, model = surprise({"every_n": 2})
    grads, _ = strategy_grads(s, model, step=1)
    assert_same(grads, plain_grads(s, model))
    assert "surprise_aux_l2" not in s.step_log()
    grads, _ = strategy_grads(s, model, step=2)
    assert_same(grads, explicit_detached(s, model, [2], [0.1])[0])
    off, model = surprise({"enabled": False})
    grads, _ = strategy_grads(off, model, step=2)
    assert_same(grads, plain_grads(off, model))
    assert off.step_log() == {}


def test_composes_with_layer_tiers_by_configuration():
    """layer_tiers (deep-fast) with surprise: inactive tiers unchanged, the active tier gets the exact surprise
    gradient; the aux loss is logged next to the active tiers."""
    s, model = surprise({"layers": [-1], "weights": [0.5]}, base="layer_tiers",
                        base_options={"order": "deep_fast", "frequencies": [1, 2]})
    fast = s.strategy.updater.members(0)
    assert {n.split(".layers.")[1][0] for n in fast} == {"1", "2"}  # 3 blocks, 2 tiers: blocks 1-2 fast
    grads, _ = strategy_grads(s, model, step=1)
    assert set(grads) == set(fast)  # the slow tier's gradient is not even computed at step 1
    assert_same(grads, explicit_detached(s, model, [2], [0.5], names=fast)[0])
    log = s.step_log()
    assert log["active_tiers"] == [0] and "surprise_aux_l2" in log
    opt = torch.optim.AdamW(s.backend.param_groups(s, 1e-2), lr=1e-2)
    before = snapshot(s.trainable)
    train_step(s, model, opt, 1, [BATCH])
    assert all(torch.equal(s.trainable[n], before[n]) == (n not in fast) for n in s.trainable)
    s.after_task(None, model)
    diag = s.diagnostics()
    assert diag["surprise"]["layers"]["2"]["steps"] == 1 and diag["tiers"]["tiers"][0]["updates"] == 1


def test_surprise_options_are_checked():
    sur = registry.get_plugin("surprise")
    with pytest.raises(ConfigError, match="'surprise' is a plugin, not a strategy"):
        registry.get("surprise")
    with pytest.raises(ConfigError, match=r"x\.weights"):
        sur.options_from({"layers": [0, 1], "weights": [0.1, 0.2, 0.3]}, "x")
    with pytest.raises(ConfigError, match=r"x\.every_n"):
        sur.options_from({"every_n": 0}, "x")
    with pytest.raises(ConfigError, match=r"x\.layers"):
        sur.options_from({"layers": [1, 1]}, "x")
    with pytest.raises(ConfigError, match="block 7 does not exist"):
        make_with("sft", {}, [("surprise", {"layers": [7]})])
