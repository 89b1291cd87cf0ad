"""The three questions a probe asks a language model, answered for a torch causal LM.

Probe scoring (``clbench.eval.probes``) only calls these methods, so another backend (MLX) is a class with the
same three methods; the scoring rules stay in one place, and the batching of the two likelihood
questions is ``clbench.eval.lm_view.LMView``'s (this class gives the forward pass and generation).

* :meth:`TorchLM.generate` — greedy continuation of each prompt, cut at the first newline;
* :meth:`TorchLM.loglikelihood` — summed log-probability of a continuation given a context;
* :meth:`TorchLM.token_nll` — summed negative log-likelihood of a whole text and its token count.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from clbench.eval.lm_view import LMView


class TorchLM(LMView):
    """Probe-facing view of a (possibly peft-wrapped) Hugging Face causal LM; a context manager that
    puts the model in eval mode (``LMView``)."""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def forward_logprobs(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
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
