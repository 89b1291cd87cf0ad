"""Surprise's measured target size (rms(∇_y L)/rms(y)) and its control plugin ``activation_l2``."""

from __future__ import annotations

import torch

from clbench.modeling.blocks import decoder_blocks
from tests.nested_helpers import begin, make, make_with, tiny_llama, token_batch, train_step

FULL = {"mode": "full"}


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


def _grads_of_one_step(s, model, batch):
    """Train one step at lr 0 and return the gradients it computed (parameters unchanged)."""
    begin(s, model)
    opt = torch.optim.SGD([p for p in s.trainable.values()], lr=0.0)
    seen = {}
    orig = s.backend.apply_gradients

    def spy(optimizer, m, trainable, grads, lr, max_norm, total_norm=None):
        seen.update({n: g.detach().clone() for n, g in grads.items()})
        return orig(optimizer, m, trainable, grads, lr, max_norm, total_norm)

    s.backend.apply_gradients = spy
    train_step(s, model, opt, 1, [batch])
    return seen, s.step_log()


def test_the_surprise_ratio_is_logged_per_step_and_in_the_diagnostics():
    batch = token_batch(7)
    expected = _independent_ratio(make("sft", FULL, model=tiny_llama(seed=6))[1], batch, 3)
    for layers in ([-1], [1, 3]):
        s, model = make_with("sft", FULL, [("surprise", {"layers": layers, "weights": [0.1]})], model=tiny_llama(seed=6))
        _, log = _grads_of_one_step(s, model, batch)
        assert abs(log["surprise_ratio_l3"] - expected) <= 1e-6 * expected, layers
        assert ("surprise_ratio_l1" in log) == (layers == [1, 3])
        layer3 = s.diagnostics()["surprise"]["layers"]["3"]
        assert layer3["signal_ratio_mean"] == log["surprise_ratio_l3"] and 0 < expected < 1


def test_activation_l2_has_the_gradients_of_surprise_with_its_target_zeroed(monkeypatch):
    import clbench.backends.torch_surprise as ts

    batch = token_batch(8)
    for layers in ([-1], [1, 3]):  # the hooked single pass and the explicit-signal pass
        opts = {"layers": layers, "weights": [0.3]}
        a, amodel = make_with("sft", FULL, [("activation_l2", opts)], model=tiny_llama(seed=9))
        grads, log = _grads_of_one_step(a, amodel, batch)
        with monkeypatch.context() as m:
            m.setattr(ts, "aux_grad", lambda y, t, w, f=ts.aux_grad: f(y, torch.zeros_like(t), w))
            m.setattr(ts, "surprise_objective", lambda loss, hs, ws, target: (
                loss + sum(w * h.pow(2).mean() for h, w in zip(hs, ws)), [h.sum() * 0 for h in hs],
                [torch.zeros_like(h) for h in hs]))
            s, smodel = make_with("sft", FULL, [("surprise", opts)], model=tiny_llama(seed=9))
            sgrads, _ = _grads_of_one_step(s, smodel, batch)
        assert grads.keys() == sgrads.keys()
        assert all(torch.allclose(grads[n], sgrads[n], rtol=1e-5, atol=1e-7) for n in grads), layers
        plain, pmodel = make("sft", FULL, model=tiny_llama(seed=9))
        pgrads, _ = _grads_of_one_step(plain, pmodel, batch)
        # the penalty is there: without it the gradients differ by far more than that tolerance
        assert not all(torch.allclose(grads[n], pgrads[n], rtol=1e-5, atol=1e-7) for n in grads)
        assert log["activation_l2_l3"] > 0
