"""The cross-check's model: an MLP 64-hidden-10 with one shared head (class-incremental).

``forward(x, labels)`` returns logits and the mean cross-entropy, the shape of a Hugging Face model's
output, so clbench strategies call it exactly as they call a language model (``model(**batch).loss``,
``.logits``). Avalanche calls ``model(x)`` and wants bare logits: :class:`LogitsOnly` wraps the same
module for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ClassifierOutput:
    logits: torch.Tensor
    loss: torch.Tensor | None = None


class DigitsMLP(nn.Module):
    def __init__(self, n_in: int = 64, hidden: int = 128, n_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> ClassifierOutput:
        logits = self.net(x)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return ClassifierOutput(logits, loss)


class LogitsOnly(nn.Module):
    """``model(x) -> logits`` view of a :class:`DigitsMLP`, for Avalanche's templates."""

    def __init__(self, mlp: DigitsMLP):
        super().__init__()
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x).logits


@torch.no_grad()
def accuracy(model: DigitsMLP, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy over all 10 classes (no task label at test time)."""
    was_training = model.training
    model.eval()
    acc = float((model(x).logits.argmax(-1) == y).float().mean())
    model.train(was_training)
    return acc
