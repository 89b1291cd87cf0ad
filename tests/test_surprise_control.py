"""Surprise's measured target size (rms(∇_y L)/rms(y)) and its control ``activation_l2``."""

from __future__ import annotations

import torch

from clbench.train.strategy import UpdateContext
from clbench.train.tiers.updater import decoder_blocks
from tests.nested_helpers import begin, make, tiny_llama, token_batch

FULL = {"base_options": {"mode": "full"}}


def _rms(t):
    return float(t.detach().float().pow(2).mean().sqrt())


def _independent_ratio(model, batch, layer):
    """rms(∇_y L)/rms(y) at block ``layer`` of an untouched copy, by plain autograd."""
    kept = {}

    def hook(module, args, output):
        y = output[0] if isinstance(output, tuple) else output
        y.retain_grad()
        kept["y"] = y

    h = decoder_blocks(model)[layer].register_forward_hook(hook)
    model(**batch).loss.backward()
    h.remove()
    return _rms(kept["y"].grad) / _rms(kept["y"])


def _step(s, model, batch):
    begin(s, model)
    s.before_step(1)
    s.loss(model, batch).loss.backward()
    s.apply_update(UpdateContext(1, 1, torch.optim.SGD(s.param_groups(model), lr=0.0), 0.0))
    return s.step_log()


def test_the_surprise_ratio_is_logged_per_step_and_in_the_diagnostics():
    batch = token_batch(7)
    expected = _independent_ratio(make("sft", {"mode": "full"}, model=tiny_llama(seed=6))[1], batch, 3)
    for layers in ([-1], [1, 3]):
        s, model = make("surprise", {**FULL, "layers": layers, "weights": [0.1]}, model=tiny_llama(seed=6))
        log = _step(s, model, batch)
        assert abs(log["surprise_ratio_l3"] - expected) <= 1e-6 * expected, layers
        assert ("surprise_ratio_l1" in log) == (layers == [1, 3])
        layer3 = s.diagnostics()["surprise"]["layers"]["3"]
        assert layer3["signal_ratio_mean"] == log["surprise_ratio_l3"] and 0 < expected < 1


def test_activation_l2_has_the_gradients_of_surprise_with_its_target_zeroed(monkeypatch):
    import clbench.strategies.surprise as surprise_module

    batch = token_batch(8)
    for layers in ([-1], [1, 3]):  # the hooked single pass and the explicit-signal pass
        opts = {**FULL, "layers": layers, "weights": [0.3]}
        a, amodel = make("activation_l2", opts, model=tiny_llama(seed=9))
        log = _step(a, amodel, batch)
        grads = {n: p.grad.clone() for n, p in a.trainable.items()}
        with monkeypatch.context() as m:
            m.setattr(surprise_module, "aux_grad", lambda y, t, w, f=surprise_module.aux_grad: f(y, torch.zeros_like(t), w))
            m.setattr(surprise_module, "surprise_objective",
                      lambda loss, hs, ws, target: (loss + sum(w * h.pow(2).mean() for h, w in zip(hs, ws)), [], []))
            s, smodel = make("surprise", opts, model=tiny_llama(seed=9))
            _step(s, smodel, batch)
        assert all(torch.allclose(grads[n], p.grad, rtol=1e-5, atol=1e-7) for n, p in s.trainable.items()), layers
        plain, pmodel = make("sft", {"mode": "full"}, model=tiny_llama(seed=9))
        _step(plain, pmodel, batch)
        # the penalty is there: without it the gradients differ by far more than that tolerance
        assert not all(torch.allclose(grads[n], p.grad, rtol=1e-5, atol=1e-7) for n, p in plain.trainable.items())
        assert log["activation_l2_aux_l3"] > 0
