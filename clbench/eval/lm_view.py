"""What a probe-facing model view is, whatever array library runs the model.

Probe scoring (``clbench.eval.probes``) asks a model three questions — ``generate``, ``loglikelihood`` and
``token_nll`` — so the scoring rules live in one place. The two likelihood questions are the same
bookkeeping on every backend (batch the texts, tokenize, read the log-probability of each predicted
token); only the forward pass differs. :class:`LMView` holds that bookkeeping; a backend's view
(``clbench.eval.torch_lm.TorchLM``, ``clbench.backends.mlx.lm.MLXLM``) gives :meth:`LMView.forward_logprobs` and
:meth:`LMView.generate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self


class LMView:
    """A model and its tokenizer, asked the probes' questions in batches of ``batch_size``.

    Use as a context manager around evaluation: the model is in eval mode (no dropout) inside and
    back in its previous mode afterwards.
    """

    def __init__(self, model, tokenizer, batch_size: int = 64):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self._was_training = model.training

    def __enter__(self) -> Self:
        self._was_training = self.model.training
        self.model.eval()
        return self

    def __exit__(self, *exc) -> None:
        self.model.train(self._was_training)

    def ids(self, text: str, special: bool = True) -> list[int]:
        return self.tokenizer(text, add_special_tokens=special)["input_ids"]

    def forward_logprobs(self, seqs: list[list[int]]):
        """Log-probs of each next token for right-padded ``seqs``: ``(logp[b, t], mask[b, t])``, CPU
        arrays that support slicing, ``*`` and ``.sum()``."""
        raise NotImplementedError

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 12) -> list[str]:
        """Greedy continuation of each prompt, decoded and cut at the first newline."""
        raise NotImplementedError

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Sum of log p(continuation tokens | context) for each ``(context, continuation)``."""
        out: list[float] = []
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start : start + self.batch_size]
            ctx = [self.ids(c) for c, _ in chunk]
            cont = [self.ids(x, special=False) for _, x in chunk]
            logp, _ = self.forward_logprobs([a + b for a, b in zip(ctx, cont)])
            for i, (a, b) in enumerate(zip(ctx, cont)):
                # token k of the sequence is predicted at position k-1
                out.append(float(logp[i, len(a) - 1 : len(a) - 1 + len(b)].sum()))
        return out

    def token_nll(self, texts: Sequence[str]) -> list[tuple[float, int]]:
        """``(summed NLL, predicted tokens)`` of each text, BOS excluded, EOS included."""
        eos = [self.tokenizer.eos_token_id]
        out: list[tuple[float, int]] = []
        for start in range(0, len(texts), self.batch_size):
            seqs = [self.ids(t) + eos for t in texts[start : start + self.batch_size]]
            logp, mask = self.forward_logprobs(seqs)
            for i in range(len(seqs)):
                out.append((float(-(logp[i] * mask[i]).sum()), int(mask[i].sum())))
        return out
