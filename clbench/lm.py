"""The three questions a probe asks a language model, answered for a torch causal LM.

Probe scoring (``clbench.probes``) only calls these methods, so another backend (MLX) is a class with the
same three methods; the scoring rules stay in one place.

* :meth:`TorchLM.generate` — greedy continuation of each prompt, cut at the first newline;
* :meth:`TorchLM.loglikelihood` — summed log-probability of a continuation given a context;
* :meth:`TorchLM.token_nll` — summed negative log-likelihood of a whole text and its token count.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class TorchLM:
    """Probe-facing view of a (possibly peft-wrapped) Hugging Face causal LM.

    Use as a context manager around evaluation: the model is in eval mode (no dropout) inside and
    back in its previous mode afterwards.
    """

    def __init__(self, model, tokenizer, batch_size: int = 64):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self._was_training = model.training

    def __enter__(self) -> TorchLM:
        self._was_training = self.model.training
        self.model.eval()
        return self

    def __exit__(self, *exc) -> None:
        self.model.train(self._was_training)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _ids(self, text: str, special: bool = True) -> list[int]:
        return self.tokenizer(text, add_special_tokens=special)["input_ids"]

    def _forward_logprobs(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs of each next token for right-padded ``seqs``: ``(logp[b, t], mask[b, t])``."""
        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        return logp.cpu(), mask[:, 1:].cpu()

    @torch.no_grad()
    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Sum of log p(continuation tokens | context) for each ``(context, continuation)``."""
        out: list[float] = []
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start : start + self.batch_size]
            ctx = [self._ids(c) for c, _ in chunk]
            cont = [self._ids(x, special=False) for _, x in chunk]
            logp, _ = self._forward_logprobs([a + b for a, b in zip(ctx, cont)])
            for i, (a, b) in enumerate(zip(ctx, cont)):
                # token k of the sequence is predicted at position k-1
                out.append(float(logp[i, len(a) - 1 : len(a) - 1 + len(b)].sum()))
        return out

    @torch.no_grad()
    def token_nll(self, texts: Sequence[str]) -> list[tuple[float, int]]:
        """``(summed NLL, predicted tokens)`` of each text, BOS excluded, EOS included."""
        eos = [self.tokenizer.eos_token_id]
        out: list[tuple[float, int]] = []
        for start in range(0, len(texts), self.batch_size):
            seqs = [self._ids(t) + eos for t in texts[start : start + self.batch_size]]
            logp, mask = self._forward_logprobs(seqs)
            for i in range(len(seqs)):
                out.append((float(-(logp[i] * mask[i]).sum()), int(mask[i].sum())))
        return out

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], max_new_tokens: int = 12) -> list[str]:
        """Greedy continuation of each prompt, decoded and cut at the first newline."""
        tok = self.tokenizer
        out: list[str] = []
        old_side = tok.padding_side
        tok.padding_side = "left"  # batched generation needs the prompts to end at the same position
        try:
            for start in range(0, len(prompts), self.batch_size):
                enc = tok(list(prompts[start : start + self.batch_size]), return_tensors="pt", padding=True)
                enc = {k: v.to(self.device) for k, v in enc.items()}
                gen = self.model.generate(
                    **enc, max_new_tokens=max_new_tokens, do_sample=False,
                    pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                )
                for row in gen[:, enc["input_ids"].shape[1]:]:
                    out.append(tok.decode(row, skip_special_tokens=True).split("\n")[0])
        finally:
            tok.padding_side = old_side
        return out
