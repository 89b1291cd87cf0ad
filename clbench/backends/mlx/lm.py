"""The probe-facing view of an mlx-lm model: the three methods of ``clbench.eval.torch_lm.TorchLM``.

``clbench.eval.probes`` scores this view unchanged; the batching of the likelihood questions is
``clbench.eval.lm_view.LMView``'s and the request ordering ``clbench.eval.requests``' (shared with torch),
this class gives the forward pass and generation. The answers must equal
the torch view's for the same weights (the parity test checks the base rows), so the rules are the same:

* ``loglikelihood`` / ``token_nll``: right-padded batches; with causal attention a real token never
  sees the padding after it, so no padding mask is needed and positions start at 0 as in torch;
* ``generate``: greedy, stopped at EOS, decoded without special tokens and cut at the first newline.
  Torch left-pads a batch and masks the padding; mlx-lm's models take no padding mask, so prompts are
  batched only with prompts of the same token length (no padding at all), which gives the unpadded
  answer exactly. Decoding stops early once every row has ended, produced a newline or settled its
  ``until`` cut (what follows is discarded anyway).
"""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
import numpy as np

from clbench.eval.lm_view import LMView
from clbench.eval.requests import (
    answer_ended,
    cut_at_newline,
    encode_text,
    same_length_batches,
    unstable_tail,
)


class MLXLM(LMView):
    """Probe-facing view of an mlx-lm model; a context manager puts it in eval mode (no dropout)."""

    def forward_logprobs(self, seqs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Log-probs of each next token for right-padded ``seqs``: ``(logp[b, t], mask[b, t])``."""
        width = max(len(s) for s in seqs)
        ids = np.full((len(seqs), width), self.tokenizer.pad_token_id, dtype=np.int32)
        mask = np.zeros((len(seqs), width), dtype=np.int32)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = s
            mask[i, : len(s)] = 1
        tokens = mx.array(ids)
        logits = self.model(tokens).astype(mx.float32)[:, :-1]
        picked = mx.take_along_axis(logits, tokens[:, 1:, None], axis=-1).squeeze(-1) - mx.logsumexp(logits, axis=-1)
        return np.array(picked), mask[:, 1:]

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 12, until: Sequence[str] = ()) -> list[str]:
        """Greedy continuation of each prompt, decoded and cut at the first newline; a row stops once its
        ``until`` cut has settled (``clbench.eval.requests.answer_ended``), as in torch."""
        encoded = [encode_text(self.tokenizer, p) for p in prompts]
        out: list[str] = [""] * len(prompts)
        for rows in same_length_batches([len(e) for e in encoded], self.batch_size):
            for i, text in zip(rows, self._greedy([encoded[i] for i in rows], max_new_tokens, until)):
                out[i] = text
        return out

    def _greedy(self, prompts: list[list[int]], max_new_tokens: int, until: Sequence[str] = ()) -> list[str]:
        """Greedy decoding of equal-length prompts with mlx-lm's KV cache."""
        from mlx_lm.models.cache import make_prompt_cache

        tok = self.tokenizer
        tail = unstable_tail(tok)
        cache = make_prompt_cache(self.model)
        logits = self.model(mx.array(prompts), cache=cache)[:, -1]
        generated: list[list[int]] = [[] for _ in prompts]
        ended = [False] * len(prompts)
        for _ in range(max_new_tokens):
            nxt = mx.argmax(logits, axis=-1)
            for row, t in enumerate(nxt.tolist()):
                if not ended[row]:
                    if t == tok.eos_token_id:
                        ended[row] = True
                    else:
                        generated[row].append(t)
                        ended[row] = answer_ended(tok.decode(generated[row], skip_special_tokens=True), until, tail)
            if all(ended):
                break
            logits = self.model(nxt[:, None], cache=cache)[:, -1]
        return [cut_at_newline(tok.decode(g, skip_special_tokens=True)) for g in generated]
