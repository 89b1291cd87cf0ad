"""The baselines' regularisers as pure functions: values on hand-computed inputs."""

from __future__ import annotations

import pytest
import torch

from clbench.train.penalties import (
    diagonal_fisher,
    distillation_kl,
    ewc_penalty,
    l2_to_anchor,
    olora_l2,
    olora_orthogonality,
)


def _params():
    return {"a": torch.tensor([1.0, -2.0], requires_grad=True), "b": torch.tensor([[0.5]], requires_grad=True)}


def test_ewc_penalty_zero_at_anchor_and_quadratic_away_from_it():
    params = _params()
    anchor = {n: p.detach().clone() for n, p in params.items()}
    fisher = {"a": torch.tensor([2.0, 0.5]), "b": torch.tensor([[4.0]])}
    assert float(ewc_penalty(params, anchor, fisher, lam=10.0).detach()) == 0.0
    d = {"a": torch.tensor([0.1, -0.2]), "b": torch.tensor([[0.3]])}
    moved = {n: anchor[n] + d[n] for n in anchor}
    moved2 = {n: anchor[n] + 2 * d[n] for n in anchor}
    # λ/2 Σ F d² = 5 · (2·0.01 + 0.5·0.04 + 4·0.09) = 5 · 0.4 = 2.0
    assert float(ewc_penalty(moved, anchor, fisher, lam=10.0)) == pytest.approx(2.0)
    assert float(ewc_penalty(moved2, anchor, fisher, lam=10.0)) == pytest.approx(8.0)  # twice as far: 4x


def test_ewc_penalty_ignores_parameters_without_fisher():
    params = _params()
    anchor = {n: p.detach() + 1.0 for n, p in params.items()}
    assert float(ewc_penalty(params, anchor, {"b": torch.tensor([[3.0]])}, lam=2.0)) == pytest.approx(3.0)


def test_diagonal_fisher_is_the_mean_squared_batch_gradient_and_leaves_grad_alone():
    w = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    coefs = [torch.tensor([1.0, 0.0, 2.0]), torch.tensor([3.0, 1.0, 0.0])]
    fisher = diagonal_fisher({"w": w}, ((w * c).sum() for c in coefs))  # d loss / dw = c
    assert torch.allclose(fisher["w"], torch.tensor([5.0, 0.5, 2.0]))  # mean of [1,0,4] and [9,1,0]
    assert w.grad is None
    with pytest.raises(ValueError):
        diagonal_fisher({"w": w}, iter(()))


class Regression(torch.nn.Module):
    """loss = mean over the batch of (w·x − y)² / 2: per sample g_n = (w·x_n − y_n) x_n."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([1.0, -1.0]))

    def forward(self, x, y):
        from types import SimpleNamespace

        return SimpleNamespace(loss=((x @ self.w - y).pow(2) / 2).mean())


def test_per_sample_fisher_is_the_mean_of_squared_per_sample_gradients():
    from clbench.train.penalties import sample_losses, split_samples

    model = Regression()
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [2.0, 1.0]])
    y = torch.tensor([0.0, 1.0, 2.0, 0.0])
    batches = [{"x": x[:2], "y": y[:2]}, {"x": x[2:], "y": y[2:]}]
    assert [float(b["y"][0]) for b in split_samples(batches[1])] == [2.0, 0.0]
    # residuals w·x − y: 1, −3, −2, 1 → g_n = r_n x_n: [1, 0], [0, −6], [−2, −2], [2, 1]
    params = dict(model.named_parameters())
    per_sample = diagonal_fisher(params, sample_losses(model, batches))
    assert torch.allclose(per_sample["w"], torch.tensor([1 + 0 + 4 + 4, 0 + 36 + 4 + 1]) / 4)  # [2.25, 10.25]
    # the batch estimator: batch means [0.5, −3] and [0, −0.5], squared and averaged: [0.125, 4.625]
    per_batch = diagonal_fisher(params, (model(**b).loss for b in batches))
    assert torch.allclose(per_batch["w"], torch.tensor([0.125, 4.625]))
    # a batch of one: both estimators are the same number
    single = [{"x": x[1:2], "y": y[1:2]}]
    assert torch.equal(diagonal_fisher(params, sample_losses(model, single))["w"],
                       diagonal_fisher(params, (model(**b).loss for b in single))["w"])


def test_l2_to_anchor():
    params = _params()
    anchor = {n: p.detach().clone() for n, p in params.items()}
    assert float(l2_to_anchor(params, anchor, lam=3.0)) == 0.0
    moved = {"a": anchor["a"] + torch.tensor([1.0, -1.0]), "b": anchor["b"] + 2.0}
    assert float(l2_to_anchor(moved, anchor, lam=3.0)) == pytest.approx(3.0 * (1 + 1 + 4))


def test_distillation_kl_zero_for_equal_logits_and_equal_to_torch_kl_otherwise():
    torch.manual_seed(0)
    s, t = torch.randn(4, 7), torch.randn(4, 7)
    assert float(distillation_kl(s, s.clone(), temperature=2.0)) == 0.0
    expected = 4.0 * torch.nn.functional.kl_div(torch.log_softmax(s / 2, -1), torch.softmax(t / 2, -1),
                                                reduction="batchmean")
    assert float(distillation_kl(s, t, temperature=2.0)) == pytest.approx(float(expected), rel=1e-5)
    assert float(distillation_kl(s, t, temperature=2.0)) > 0


def test_distillation_kl_mask_drops_padding_positions():
    torch.manual_seed(1)
    s, t = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    value = distillation_kl(s, t, 1.0, mask)
    s2 = s.clone()
    s2[0, 3:] = 100.0  # padding positions change: the value must not
    assert float(distillation_kl(s2, t, 1.0, mask)) == pytest.approx(float(value))
    per_pos = (torch.softmax(t, -1) * (torch.log_softmax(t, -1) - torch.log_softmax(s, -1))).sum(-1)
    assert float(value) == pytest.approx(float(per_pos[mask.bool()].mean()), rel=1e-5)


def test_olora_orthogonality_on_hand_computed_matrices():
    old = {"layer": torch.tensor([[1.0, 0.0, 0.0]])}
    new = {"layer": torch.tensor([[0.0, 1.0, 0.0], [1.0, -2.0, 0.0]], requires_grad=True)}
    # A_old · A_newᵀ = [[0, 1]] -> Σ|.| = 1; a second old adapter [[0, 1, 0]] adds |[1, -2]| = 3
    assert float(olora_orthogonality(new, [old])) == pytest.approx(1.0)
    two = olora_orthogonality(new, [old, {"layer": torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])}])
    assert float(two) == pytest.approx(4.0)
    assert float(olora_orthogonality({"layer": torch.tensor([[0.0, 0.0, 5.0]])}, [old])) == 0.0
    assert float(olora_orthogonality(new, [])) == 0.0
    two.backward()
    assert new["layer"].grad is not None


def test_olora_l2_sums_unsquared_norms_and_has_a_finite_gradient_at_zero():
    a = torch.tensor([3.0, 4.0], requires_grad=True)
    zero = torch.zeros(2, 2, requires_grad=True)  # a fresh LoRA B is all zeros
    value = olora_l2([a, zero])
    assert float(value) == pytest.approx(5.0)
    value.backward()
    assert torch.allclose(a.grad, torch.tensor([0.6, 0.8]))
    assert torch.isfinite(zero.grad).all()
