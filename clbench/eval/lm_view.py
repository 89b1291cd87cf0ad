"""What a probe-facing model view is, whatever array library runs the model.

Probe scoring (``clbench.eval.probes``) asks a model three questions — ``generate``, ``loglikelihood`` and
``token_nll`` — so the scoring rules live in one place. The two likelihood questions are the same
bookkeeping on every backend: tokenize as lm-eval does, group the choices of one prompt, order and
batch the requests by length (``clbench.eval.requests``), then read the log-probability of each
predicted token. :class:`LMView` holds that bookkeeping; a backend's view (``clbench.eval.torch_lm.TorchLM``,
``clbench.backends.mlx.lm.MLXLM``) gives :meth:`LMView.forward_logprobs` and :meth:`LMView.generate`, and
may replace :meth:`LMView.score_groups` with one that runs a shared context once (torch does, as a
token tree: ``clbench.eval.token_tree``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

from clbench.eval.requests import Group, chunks, encode_pair, group_requests, longest_first, per_group


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
        """Log-prob of each next token for right-padded ``seqs``: ``(logp[b, t], mask[b, t])``, CPU
        arrays that support slicing, ``*`` and ``.sum()``; ``logp[b, t]`` is log p(seq[t+1] | seq[:t+1])."""
        raise NotImplementedError

    def next_token_logprobs(self, seqs: list[list[int]]) -> list:
        """The whole next-token distribution (log-probabilities over the vocabulary, float32, CPU) at every
        position of each sequence that predicts one of its tokens: ``len(seq) − 1`` rows each
        (``clbench.eval.kl``). A backend without it raises ``NotImplementedError``."""
        raise NotImplementedError

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 12, until: Sequence[str] = ()) -> list[str]:
        """Greedy continuation of each prompt, decoded and cut at the first newline. ``until``: the strings
        the caller will cut the answer at; decoding of a continuation may stop once they have settled the
        cut (``clbench.eval.requests.answer_ended``), so the text may end just after one of them."""
        raise NotImplementedError

    def score_groups(self, groups: list[Group]) -> list[list[float]]:
        """Summed log-prob of every continuation of every group, given the group's context.

        This generic form runs each ``context + continuation`` as its own sequence, ``batch_size`` rows
        at a time; a backend whose model takes a 4-D attention mask runs each distinct prefix once instead
        (``clbench.eval.torch_lm.TorchLM.score_groups``).
        """
        rows = [(g.context, c) for g in groups for c in g.continuations]
        flat: list[float] = []
        for piece in chunks(len(rows), self.batch_size):
            logp, _ = self.forward_logprobs([rows[r][0] + rows[r][1] for r in piece])
            for k, r in enumerate(piece):
                n, c = len(rows[r][0]), rows[r][1]
                # token k of the sequence is predicted at position k-1
                flat.append(float(logp[k, n - 1 : n - 1 + len(c)].sum()) if c else 0.0)
        return per_group(groups, flat)

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Sum of log p(continuation tokens | context) for each ``(context, continuation)``, tokenized
        as lm-eval tokenizes it (``clbench.eval.requests.encode_pair``)."""
        requests = [encode_pair(self.tokenizer, c, x) for c, x in pairs]
        out = [0.0] * len(requests)
        for batch in group_requests(requests, self.batch_size):
            for g, sums in zip(batch, self.score_groups(batch)):
                for i, s in zip(g.members, sums):
                    out[i] = s
        return out

    def token_nll(self, texts: Sequence[str]) -> list[tuple[float, int]]:
        """``(summed NLL, predicted tokens)`` of each text, BOS excluded, EOS included."""
        eos = [self.tokenizer.eos_token_id]
        seqs = [self.ids(t) + eos for t in texts]
        out: list[tuple[float, int]] = [(0.0, 0)] * len(seqs)
        for rows in longest_first([len(s) for s in seqs], self.batch_size):
            logp, mask = self.forward_logprobs([seqs[i] for i in rows])
            for k, i in enumerate(rows):
                out[i] = (float(-(logp[k] * mask[k]).sum()), int(mask[k].sum()))
        return out
