"""Test-time learning of a CMS memory: a probe view whose memories learn from each batch's prompts first.

With ``test_time_updates`` (``strategies/cms_local.py``), every probe batch's prompts —
never the continuations being scored — are memorised by the local δ-rule of
``clbench.modeling.cms_memory`` (one teach-signal pass, one memorising pass), the batch is answered with
the memory frozen, and every memory is restored afterwards, so no probe sees what another probe taught.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch

from clbench.eval.lm_view import LMView
from clbench.modeling.cms_memory import ContinuumMemory, lm_teach_signals, memorize


@contextmanager
def restored(memories: Sequence[ContinuumMemory]):
    """Every memory's weights and state as they were on entry, after the block."""
    saved = [({k: v.clone() for k, v in m.state_dict().items()}, m.memory_state(),
              (list(m.updates), list(m.gate_misses), [list(s) for s in m.surprise],
               [list(p) for p in m.update_positions])) for m in memories]
    try:
        yield
    finally:
        for m, (weights, state, stats) in zip(memories, saved):
            m.load_state_dict(weights)
            m.load_memory_state(state)
            m.updates, m.gate_misses, m.surprise, m.update_positions = stats


class TestTimeMemoryView(LMView):
    """A probe view whose memories learn from each batch's prompts before answering it (module
    docstring). Perplexity probes have no prompt: they see the memory as trained."""

    __test__ = False  # not a pytest class

    def __init__(self, inner: LMView, memories: Sequence[ContinuumMemory]):
        super().__init__(inner.model, inner.tokenizer, inner.batch_size)
        self.inner, self.memories = inner, list(memories)
        self.prompt_tokens = 0

    def __enter__(self):
        self.inner.__enter__()
        return self

    def __exit__(self, *exc):
        self.inner.__exit__(*exc)

    def forward_logprobs(self, seqs):
        return self.inner.forward_logprobs(seqs)

    def learn(self, seqs: list[list[int]]) -> None:
        """One teach-signal pass and one memorising pass over right-padded ``seqs``."""
        device = next(self.model.parameters()).device
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        batch = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        deltas = lm_teach_signals(self.model, self.memories, batch["input_ids"], batch["attention_mask"])
        memorize(self.model, self.memories, batch, deltas)
        self.prompt_tokens += int(mask.sum())

    def loglikelihood(self, pairs):
        out: list[float] = []
        for start in range(0, len(pairs), self.batch_size):
            chunk = list(pairs[start:start + self.batch_size])
            with restored(self.memories):
                self.learn([self.ids(c) for c, _ in chunk])
                out.extend(LMView.loglikelihood(self, chunk))
        return out

    def generate(self, prompts, max_new_tokens: int = 12, until=()):
        out: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = list(prompts[start:start + self.batch_size])
            with restored(self.memories):
                self.learn([self.ids(p) for p in chunk])
                out.extend(self.inner.generate(chunk, max_new_tokens, until=until))
        return out
