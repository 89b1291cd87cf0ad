"""How far a model's predictions moved from the base model's: the KL divergence on held-out general text.

Shenfeld et al. 2025 ("RL's Razor") find that forgetting follows the KL divergence of the fine-tuned
model from the base model, whatever the method. Every evaluation row therefore carries::

    kl_base = (1/N) Σ_t KL( p_base(· | x_<t) ‖ p(· | x_<t) )        (nats per predicted token)

over the N positions of :func:`kl_texts` that predict a token of their text (BOS excluded, as the
perplexity probes count them): the base model's whole next-token distribution against the model's, in
the direction of forgetting — how much of what the base model predicted the model now gives up. The
texts are the pretrained tasks' perplexity probes (general text no strategy trains on: replay trains on
a pretrained task's *training* records, never its probes), the first :data:`KL_TEXTS` of them, so the
base model's distributions (N × vocabulary floats, ~130 MB on SmolLM2) stay in memory for the run.

The base distributions are computed once per run, from the model as loaded, through the same probe
view as every evaluation row (its precision and weight casts), so an unchanged model has KL 0 exactly.
A strategy's probe view that learns at test time (``cms_local`` with ``test_time_updates``) is not used here:
the KL is that of the trained weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

KL_TEXTS = 64  # texts of the pretrained tasks' perplexity probes, in file order


def kl_texts(stream) -> list[str]:
    """The held-out general texts of ``stream``: its pretrained tasks' perplexity items, the first
    :data:`KL_TEXTS` (none when it has no such suite: then no KL is recorded)."""
    texts = [item["text"] for task in stream.pretrained_tasks for suite in task.probes
             if suite.kind == "perplexity" for item in suite.items]
    return texts[:KL_TEXTS]


def distributions(view, texts: Sequence[str]) -> list[torch.Tensor] | None:
    """The view's next-token log-probabilities on ``texts`` (one ``(len − 1, vocabulary)`` tensor each),
    ``view.batch_size`` texts a pass; None where the backend's view does not give whole distributions."""
    seqs = [view.ids(t) for t in texts]
    out: list[torch.Tensor] = []
    try:
        for start in range(0, len(seqs), view.batch_size):
            out.extend(view.next_token_logprobs(seqs[start:start + view.batch_size]))
    except NotImplementedError:
        return None
    return out


def mean_kl(base: Sequence[torch.Tensor], now: Sequence[torch.Tensor]) -> float:
    """Σ_t Σ_v p_base(v) (log p_base(v) − log p(v)) / N over every position of every text."""
    if len(base) != len(now):
        raise ValueError(f"{len(base)} texts of base distributions, {len(now)} now")
    total, n = 0.0, 0
    for b, q in zip(base, now, strict=True):
        if b.shape != q.shape:
            raise ValueError(f"distributions of shape {tuple(b.shape)} and {tuple(q.shape)}")
        lp, lq = b.double(), q.double()
        p = lp.exp()
        total += float(torch.where(p > 0, p * (lp - lq), 0.0).sum())  # 0 · log 0 = 0
        n += b.shape[0]
    return total / n if n else float("nan")


class KLFromBase:
    """The base model's distributions on the run's KL texts, and the KL of any later view from them."""

    def __init__(self, texts: Sequence[str], base_view):
        self.texts = list(texts)
        self.base = distributions(base_view, self.texts) if self.texts else None

    def record(self, kl_base: float) -> dict:
        """The ``kl`` field of a row: the value, and how many texts and predicted tokens it averages."""
        return {"kl_base": kl_base, "kl_texts": len(self.texts), "kl_tokens": sum(b.shape[0] for b in self.base)}

    def unchanged(self) -> dict | None:
        """The record of the base model itself (KL 0 exactly), for a row copied from the base row."""
        return None if self.base is None else self.record(0.0)

    def __call__(self, view) -> dict | None:
        """``{"kl_base": nats per token, "kl_texts": n, "kl_tokens": N}`` for ``view``, or None (no texts,
        or a backend without whole distributions)."""
        if self.base is None:
            return None
        now = distributions(view, self.texts)
        if now is None:
            return None
        return self.record(mean_kl(self.base, now))
