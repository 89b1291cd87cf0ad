"""The language-modelling loss of a training step, with the output layer computed at labelled positions only.

``model(**batch).loss`` (Hugging Face) runs the output layer — hidden size × vocabulary, 28M
multiply-adds a position on SmolLM2-135M, a fifth of the model — and a vocabulary-wide log-softmax at
every position of the batch, padding and prompt tokens included, then ignores every position whose next
token is not labelled (``-100``). A question/answer record trains its answer only, so in the real
stream's batches about a third of the positions are labelled. Here the output layer gets the hidden
states of the labelled positions only (a forward pre-hook on the model's output embeddings selects them,
so whatever the model applies after that layer — Gemma's logit soft-capping, say — still applies), and
the loss is the same mean next-token cross-entropy, over the same positions, as transformers'
``ForCausalLMLoss``: equal up to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def causal_lm_loss(model, batch: dict) -> torch.Tensor:
    """Mean cross-entropy of every labelled next token of ``batch`` (``input_ids``, ``attention_mask``,
    ``labels`` with ``-100`` where nothing is trained), as ``model(**batch).loss``."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or "labels" not in batch:
        return model(**batch).loss
    logits, targets, _ = labelled_logits(model, batch)
    return F.cross_entropy(_at_least_float32(logits), targets)  # as transformers: float32 at least


def causal_lm_sample_losses(model, batch: dict) -> torch.Tensor:
    """Each row's mean cross-entropy over its own labelled next tokens: what ``model(**row).loss`` gives for
    the row alone (a row with none labelled gives 0, where transformers' mean would be 0/0)."""
    labels = batch["labels"]
    logits, targets, rows = labelled_logits(model, batch)
    nll = F.cross_entropy(_at_least_float32(logits), targets, reduction="none")
    total = torch.zeros(len(labels), dtype=nll.dtype, device=nll.device).index_add(0, rows, nll)
    return total / (labels[:, 1:] != IGNORE).sum(1).clamp(min=1)


def labelled_logits(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logits, targets, rows)`` at the positions whose next token is labelled, in row-major order: the
    output layer sees only those positions' hidden states."""
    head = model.get_output_embeddings()
    labels = batch["labels"]
    labelled = labels[:, 1:] != IGNORE
    predicts = torch.zeros_like(labels, dtype=torch.bool)
    predicts[:, :-1] = labelled  # the hidden state at p predicts the token at p + 1
    targets = labels[:, 1:][labelled]
    rows = predicts.nonzero()[:, 0]

    def only_labelled(module, args):
        return (args[0][predicts],)

    handle = head.register_forward_pre_hook(only_labelled)
    try:
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    finally:
        handle.remove()
    return logits, targets, rows


def _at_least_float32(logits: torch.Tensor) -> torch.Tensor:
    return logits if logits.dtype == torch.float64 else logits.float()
