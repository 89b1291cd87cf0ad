"""The regularisers of the classic continual-learning baselines, as pure functions of tensors.

Nothing here knows about tasks, runners or optimizers: each function takes parameters (``name →
tensor`` mappings), logits or losses and returns a scalar tensor that can be added to a loss, so the
same code serves the language-model runner, the digits cross-check and any other loop.

* :func:`ewc_penalty`, :func:`diagonal_fisher` and :func:`sample_losses` — elastic weight consolidation
  (Kirkpatrick et al. 2017);
* :func:`l2_to_anchor` — a plain quadratic pull towards earlier parameters (EWC with F = 1);
* :func:`distillation_kl` — learning without forgetting's distillation term (Li & Hoiem 2017);
* :func:`olora_orthogonality` and :func:`olora_l2` — O-LoRA's regularisers (Wang et al. 2023).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

import torch

Params = Mapping[str, torch.Tensor]


def _zero_like(params: Params) -> torch.Tensor:
    p = next(iter(params.values()), None)
    return torch.zeros((), device=p.device if p is not None else "cpu")


def ewc_penalty(params: Params, anchor: Params, fisher: Params, lam: float) -> torch.Tensor:
    """``λ/2 · Σ_i F_i (θ_i − θ*_i)²`` over the parameters present in ``fisher``.

    Zero at the anchor, quadratic away from it; a parameter missing from ``fisher`` is not constrained.
    """
    total = _zero_like(params)
    for name, f in fisher.items():
        diff = params[name] - anchor[name]
        total = total + (f * diff.pow(2)).sum()
    return 0.5 * lam * total


def diagonal_fisher(params: Params, losses: Iterable[torch.Tensor]) -> dict[str, torch.Tensor]:
    """The mean over ``losses`` of the squared gradient of each loss: a diagonal Fisher estimate.

    What it estimates depends on what ``losses`` yields (a generator, so only one graph is alive):

    * one loss per *sample* (:func:`sample_losses`) — the empirical Fisher of Kirkpatrick et al.
      (2017), ``F_i = (1/N) Σ_n (∂ log p(y_n | x_n) / ∂θ_i)²``, an expectation over data points of
      squared per-sample gradients (EWC's ``fisher: sample``);
    * one mean loss per *mini-batch* — the square of the batch-mean gradient, ``(1/K) Σ_k ((1/B) Σ_{n∈k}
      g_n)²``, which is Avalanche's ``EWCPlugin`` estimator (EWC's ``fisher: batch``, kept for the
      cross-check). It is not the Fisher: the square of a mean is not the mean of the squares — for
      uncorrelated per-sample gradients it is about 1/B of it, and its shape across parameters differs
      wherever samples' gradients disagree in sign.

    Gradients come from :func:`torch.autograd.grad`, so the ``.grad`` buffers the optimizer uses are
    left untouched.
    """
    names = list(params)
    tensors = [params[n] for n in names]
    fisher = {n: torch.zeros_like(t, memory_format=torch.preserve_format).detach() for n, t in params.items()}
    count = 0
    for loss in losses:
        grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        for n, g in zip(names, grads):
            if g is not None:
                fisher[n] += g.detach().pow(2)
        count += 1
    if count == 0:
        raise ValueError("diagonal_fisher needs at least one loss")
    return {n: f / count for n, f in fisher.items()}


def split_samples(batch: Mapping[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """A collated batch as batches of one (every tensor sliced on its first dimension)."""
    n = len(next(iter(batch.values())))
    return [{k: v[i : i + 1] for k, v in batch.items()} for i in range(n)]


def sample_losses(model, batches: Iterable[Mapping[str, torch.Tensor]]) -> Iterator[torch.Tensor]:
    """The loss of every sample of ``batches`` alone (``model(**one).loss``): for a language model, the
    sample's mean token negative log-likelihood.

    One forward and backward pass per sample. Hand-looped rather than ``torch.func.vmap(grad(...))``:
    transformers' attention-mask construction branches on tensor values, which ``vmap`` refuses.
    """
    for batch in batches:
        for one in split_samples(batch):
            yield model(**one).loss


def l2_to_anchor(params: Params, anchor: Params, lam: float) -> torch.Tensor:
    """``λ · Σ_i (θ_i − θ*_i)²`` over the parameters present in ``anchor``."""
    total = _zero_like(params)
    for name, a in anchor.items():
        total = total + (params[name] - a).pow(2).sum()
    return lam * total


def distillation_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0,
                    mask: torch.Tensor | None = None, t_squared: bool = True) -> torch.Tensor:
    """``T² · KL(softmax(teacher/T) ‖ softmax(student/T))``, averaged over the positions in ``mask``.

    Logits are ``(..., classes)``; every leading position is one distribution (a class-incremental
    example, or one token position of a language model). ``mask`` (same leading shape, 1 = keep)
    drops padding. The T² factor (Hinton et al. 2015) keeps the gradient scale independent of T;
    Li & Hoiem's LwF loss λ_o · L_old has no such factor — ``t_squared=False`` drops it (at T = 2 the
    two differ by 4×). The value is exactly zero when the two logit tensors are equal, and never negative.
    """
    t = float(temperature)
    factor = t * t if t_squared else 1.0
    log_p_student = torch.log_softmax(student_logits.float() / t, dim=-1)
    log_p_teacher = torch.log_softmax(teacher_logits.float().detach() / t, dim=-1)
    per_position = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)
    if mask is None:
        return factor * per_position.mean()
    mask = mask.to(per_position.dtype)
    return factor * (per_position * mask).sum() / mask.sum().clamp_min(1.0)


def olora_orthogonality(new_a: Mapping[str, torch.Tensor], old_a: Sequence[Mapping[str, torch.Tensor]]) -> torch.Tensor:
    """O-LoRA's ``Σ_layers Σ_old Σ_jk |(A_old · A_newᵀ)_jk|``.

    ``new_a`` maps a layer key to the new adapter's ``lora_A`` weight (``r × in_features``); each
    mapping in ``old_a`` gives an earlier adapter's ``lora_A`` for the same keys. The penalty is zero
    exactly when every row of the new A is orthogonal to every row of every old A, i.e. the new task's
    update reads its input from a subspace the earlier tasks' updates do not use.
    """
    total = _zero_like(new_a)
    for old in old_a:
        for key, a_new in new_a.items():
            total = total + (old[key].detach() @ a_new.T).abs().sum()
    return total


def olora_l2(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """``Σ_tensors ‖W‖₂`` (Frobenius norms, not squared) over the new adapter's weights.

    The O-LoRA reference implementation adds ``torch.norm(param, p=2)`` for every new LoRA tensor;
    clbench keeps that exact form so its λ2 means what the paper's code means.
    """
    params = list(params)
    total = torch.zeros((), device=params[0].device if params else "cpu")
    for p in params:
        total = total + torch.linalg.vector_norm(p.float())
    return total
