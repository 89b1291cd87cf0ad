"""Elastic weight consolidation (Kirkpatrick et al. 2017), with the online variant (Schwarz et al. 2018).

At the end of each trained task the diagonal empirical Fisher ``F`` of the trainable parameters is
estimated over the samples of the task's last ``fisher_batches`` training batches, re-scored at the
task's final parameters ``θ*``: ``fisher: sample`` (default) is Kirkpatrick et al.'s per-sample
expectation, the mean over samples of the squared gradient of each sample's log-likelihood (for a
language model a sample is one training sequence, its loss the mean token NLL, so a batch of one gives
the same number under both estimators); ``fisher: batch`` is the square of each mini-batch's mean
gradient, averaged over the batches — Avalanche's ``EWCPlugin`` estimator, kept for the cross-check and
for comparison (:func:`clbench.train.penalties.diagonal_fisher` says why it is not the Fisher). The
per-sample estimate costs one forward and backward pass per sample at the end of each task, or one per
mini-batch where every trained parameter is a Linear layer's (LoRA; :mod:`clbench.train.per_sample_fisher`
forms the per-sample gradients from the batch's own backward pass). Later tasks add
``λ/2 · Σ F (θ − θ*)²`` to the loss: one term per earlier task (``online: false``), or a single term
whose Fisher decays, ``F ← γ·F + F_new``, and whose anchor is the latest ``θ*`` (``online: true``).

The Fisher batches are the ones the training loop fed this strategy, so EWC needs no tokenizer or
collate function of its own and works unchanged in the digits cross-check. Nothing protects the base
model during the first trained task: EWC has no Fisher for the pretraining data.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

import torch

from clbench.config.options import opt
from clbench.modeling.lora import LoraOptions
from clbench.strategies.sft import SFT
from clbench.train.penalties import diagonal_fisher, ewc_penalty, sample_losses
from clbench.train.per_sample_fisher import linear_sample_fisher
from clbench.train.registry import register
from clbench.train.strategy import LossOutput


@dataclass(frozen=True)
class EWCOptions(LoraOptions):
    lam: float = opt(1e4, "λ of the penalty λ/2 Σ F (θ − θ*)² (1e4: best of a sweep with the per-sample Fisher)", ge=0)
    fisher_batches: int = opt(16, "last training batches of a task used for its Fisher", ge=1)
    online: bool = opt(False, "online EWC: one decayed Fisher and the latest anchor instead of one term per task")
    gamma: float = opt(1.0, "online EWC: decay of the earlier Fisher, F ← γF + F_new", ge=0, le=1)
    fisher: Literal["sample", "batch"] = opt("sample", "sample: mean of per-sample squared gradients (Kirkpatrick); "
                                                       "batch: squared mini-batch mean gradient (Avalanche)")


@register("ewc")
class EWC(SFT):  # SFT's LoRA-or-full set-up; this adds the method
    """Elastic weight consolidation: a Fisher-weighted quadratic pull towards each earlier task's parameters."""

    backends = ("torch",)  # its Fisher and penalty are torch autograd and tensor code

    Options = EWCOptions

    def __init__(self, options=None, **kw):
        super().__init__(options, **kw)
        self.terms: list[dict[str, dict[str, torch.Tensor]]] = []  # [{"fisher": {...}, "anchor": {...}}]
        self._recent: deque = deque(maxlen=self.options.fisher_batches)
        self._last_penalty = 0.0

    def before_task(self, task, model):
        self._recent.clear()

    def penalty(self) -> torch.Tensor:
        total = torch.zeros((), device=next(iter(self.trainable.values())).device)
        for term in self.terms:
            total = total + ewc_penalty(self.trainable, term["anchor"], term["fisher"], self.options.lam)
        return total

    def loss(self, model, batch):
        self._recent.append(batch)
        loss = self.backend.lm_loss(model, batch)
        if not self.terms:
            return LossOutput(loss)
        pen = self.penalty()
        self._last_penalty = float(pen.detach())
        return LossOutput(loss + pen, {"ewc_penalty": self._last_penalty})

    def after_task(self, task, model):
        was_training = model.training
        model.eval()  # no dropout while measuring curvature, as Avalanche's EWCPlugin does
        fisher = (linear_sample_fisher(model, self.trainable, self._recent) if self.options.fisher == "sample"
                  else None)  # batched per-sample gradients where every trained weight is a Linear's (LoRA)
        if fisher is None:
            losses = (sample_losses(model, self._recent) if self.options.fisher == "sample"
                      else (model(**b).loss for b in self._recent))
            fisher = diagonal_fisher(self.trainable, losses)
        model.train(was_training)
        self._recent.clear()
        anchor = {n: p.detach().clone() for n, p in self.trainable.items()}
        if self.options.online and self.terms:
            old = self.terms[0]["fisher"]
            fisher = {n: self.options.gamma * old[n] + f for n, f in fisher.items()}
            self.terms = []
        self.terms.append({"fisher": fisher, "anchor": anchor})

    def state_dict(self):
        return {"terms": [{k: {n: t.cpu() for n, t in d.items()} for k, d in term.items()} for term in self.terms]}

    def load_state_dict(self, state):
        device = next(iter(self.trainable.values())).device
        self.terms = [{k: {n: t.to(device) for n, t in d.items()} for k, d in term.items()} for term in state["terms"]]

    def diagnostics(self):
        def mean(fisher):
            return float(sum(f.sum() for f in fisher.values()) / sum(f.numel() for f in fisher.values()))

        return {"ewc_terms": len(self.terms), "ewc_penalty_last": self._last_penalty,
                "fisher_mean": [mean(t["fisher"]) for t in self.terms]}
