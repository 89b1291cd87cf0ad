"""The three questions a probe asks a language model, answered for a torch causal LM.

Probe scoring (``clbench.eval.probes``) only calls these methods, so another backend (MLX) is a class with the
same three methods; the scoring rules stay in one place, and the tokenizing, grouping and batching of
the requests is ``clbench.eval.lm_view.LMView``'s and ``clbench.eval.requests``' (this class gives the model
calls).

* :meth:`TorchLM.generate` — greedy continuation of each prompt, cut at the first newline;
* :meth:`TorchLM.loglikelihood` — summed log-probability of a continuation given a context;
* :meth:`TorchLM.token_nll` — summed negative log-likelihood of a whole text and its token count.

What makes it fast, none of which changes a score beyond float rounding:

* only the logits of predicted tokens are read, as ``logit[target] - logsumexp(logits)`` (no
  ``log_softmax`` array over the whole vocabulary at every position), and the context pass computes
  the output layer at its last position only (``logits_to_keep``);
* the context of a multiple-choice item runs once: its choices follow it in the same row, each as a
  branch that attends to the context and to itself only (a tree-shaped 4-D attention mask, positions
  given explicitly), so one row holds the context plus every choice but its last token, where lm-eval
  runs one padded row of context plus choice per choice; and the prefix every context of a batch
  shares (a suite's prompt template) runs once for the whole batch, as a KV cache;
* requests are ordered by length, so a batch pads to similar lengths;
* generation stops as soon as every sequence of the batch has produced EOS or a newline (the answer is
  cut at the first newline anyway), instead of always running ``max_new_tokens``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from clbench.eval.lm_view import LMView
from clbench.eval.requests import (
    Group,
    answer_ended,
    common_prefix,
    cut_at_newline,
    encode_text,
    longest_first,
    per_group,
)


class TorchLM(LMView):
    """Probe-facing view of a (possibly peft-wrapped) Hugging Face causal LM; a context manager that
    puts the model in eval mode (``LMView``)."""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _pad(self, seqs: list[list[int]], left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            cols = slice(width - len(s), width) if left else slice(0, len(s))
            ids[i, cols] = torch.tensor(s, dtype=torch.long)
            mask[i, cols] = 1
        return ids.to(self.device), mask.to(self.device)

    @torch.no_grad()
    def forward_logprobs(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs of each next token for right-padded ``seqs``: ``(logp[b, t], mask[b, t])``."""
        ids, mask = self._pad(seqs)
        logits = self.model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        return _picked_logprobs(logits, ids[:, 1:]).cpu(), mask[:, 1:].cpu()

    @torch.no_grad()
    def score_groups(self, groups: list[Group]) -> list[list[float]]:
        """Every continuation of every group scored in one forward pass (plus one for a shared prefix).

        One row per group: the context once, then every continuation but its last token, each as its
        own branch that attends to the context and to itself only (a tree-shaped attention mask, and the
        positions each token would have right after the context), so each continuation is scored
        exactly as in its own ``context + continuation`` sequence. The prefix every context of the batch
        shares (a suite's prompt template) runs once, as a one-row KV cache the rows attend to.
        """
        packed = [_pack(g) for g in groups]
        shared = min(common_prefix([g.context for g in groups]), min(len(g.context) for g in groups) - 1)
        cache = None
        if shared > 0:
            prefix = torch.tensor([groups[0].context[:shared]], device=self.device)
            cache = self.model(input_ids=prefix, use_cache=True, **self._logits_from(1)).cache
            cache.batch_repeat_interleave(len(groups))
        width = max(len(p.tokens) for p in packed) - shared
        ids = torch.full((len(packed), width), self.tokenizer.pad_token_id, dtype=torch.long)
        pos = torch.zeros((len(packed), width), dtype=torch.long)
        seg = torch.full((len(packed), shared + width), PAD_SEG, dtype=torch.long)
        seg[:, :shared] = CONTEXT_SEG
        for i, p in enumerate(packed):
            n = len(p.tokens)
            ids[i, : n - shared] = torch.tensor(p.tokens[shared:])
            pos[i, : n - shared] = torch.tensor(p.positions[shared:])
            seg[i, shared:n] = torch.tensor(p.segments[shared:])
        q_seg, k_seg = seg[:, shared:, None], seg[:, None, :]
        causal = torch.arange(shared + width)[None, :] <= torch.arange(shared, shared + width)[:, None]
        allowed = causal[None] & ((k_seg == CONTEXT_SEG) | (k_seg == q_seg))
        dtype = next(self.model.parameters()).dtype
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]
        first = min(p.first_needed for p in packed) - shared  # the output layer runs from here on only
        keep = self._logits_from(torch.arange(first, width, device=self.device))
        logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                            position_ids=pos.to(self.device), cache=cache, use_cache=False, **keep).logits
        logits = logits if keep else logits[:, first:]
        preds = [(i, at - shared - first, tok, k) for i, p in enumerate(packed) for at, tok, k in p.predictions]
        offset = [0]
        for g in groups:
            offset.append(offset[-1] + len(g.continuations))
        scores = torch.zeros(offset[-1], dtype=torch.float32, device=self.device)
        if preds:
            row, col, target, cont = (torch.tensor(x, device=self.device) for x in zip(*preds))
            slot = torch.tensor(offset[:-1], device=self.device)[row] + cont
            scores.index_add_(0, slot, _picked_logprobs(logits[row, col], target))
        return per_group(groups, scores.cpu().tolist())

    def _logits_from(self, positions: torch.Tensor | int) -> dict:
        """``logits_to_keep=positions`` (an int: the last ones) where the model's forward takes it, as
        transformers' causal LMs do; otherwise nothing (the caller slices the full logits)."""
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        return {"logits_to_keep": positions} if "logits_to_keep" in inspect.signature(base.forward).parameters else {}

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], max_new_tokens: int = 12) -> list[str]:
        """Greedy continuation of each prompt, decoded and cut at the first newline; prompts of similar
        length share a batch, and a batch stops once every row has ended."""
        tok = self.tokenizer
        encoded = [encode_text(tok, p) for p in prompts]
        out: list[str] = [""] * len(prompts)
        for rows in longest_first([len(e) for e in encoded], self.batch_size):
            ids, mask = self._pad([encoded[i] for i in rows], left=True)
            stop = _AnswerEnded(tok, ids.shape[1])
            gen = self.model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                stopping_criteria=StoppingCriteriaList([stop]),
            )
            for i, row in zip(rows, gen[:, ids.shape[1]:]):
                out[i] = cut_at_newline(tok.decode(row, skip_special_tokens=True))
        return out


CONTEXT_SEG, PAD_SEG = -1, -2  # segment ids of a packed row: context, padding; continuation j is j


@dataclass
class _Packed:
    """A context and its continuations as one row (see :meth:`TorchLM.score_groups`)."""

    tokens: list[int]
    positions: list[int]
    segments: list[int]
    predictions: list[tuple[int, int, int]]  # (row position, predicted token, continuation index)
    first_needed: int


def _pack(g: Group) -> _Packed:
    n = len(g.context)
    p = _Packed(list(g.context), list(range(n)), [CONTEXT_SEG] * n, [], n - 1)
    for j, cont in enumerate(g.continuations):
        if cont:
            p.predictions.append((n - 1, cont[0], j))
        for t, tok in enumerate(cont[:-1]):  # a continuation's last token predicts nothing needed
            p.predictions.append((len(p.tokens), cont[t + 1], j))
            p.tokens.append(tok)
            p.positions.append(n + t)
            p.segments.append(j)
    return p


def _picked_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits)[target]`` at every position, without the vocabulary-wide array."""
    logits = logits.float()
    return logits.gather(-1, targets[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


class _AnswerEnded(StoppingCriteria):
    """Per row: has the generated text reached a newline? (EOS is generate's own stop.)"""

    def __init__(self, tokenizer, prompt_width: int):
        self.tokenizer, self.prompt_width = tokenizer, prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_width:], skip_special_tokens=True)
        return torch.tensor([answer_ended(t) for t in texts], device=input_ids.device)
