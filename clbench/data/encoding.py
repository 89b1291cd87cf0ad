"""Training examples → token tensors, and a seeded batch stream.

Two record shapes are accepted (the same as user JSONL files):

* ``{"text": ...}`` — language modelling on every token;
* ``{"prompt": ..., "completion": ...}`` — loss on the completion only (the prompt's labels are -100).

Prompt and completion are tokenized separately, exactly as the probes tokenize a prompt and score a
continuation, so a fact learned in training is the token sequence a probe asks for.

A record longer than ``max_length`` tokens is cut to it (and marked ``truncated``, which the runner
counts and warns about). Only the beginning of a long text is tokenized (:func:`head_tokens`), so one
huge record costs memory in proportion to ``max_length``, not to its size: tokenizing a whole 50 MB
line took 10 GB.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

IGNORE = -100


CHARS_PER_TOKEN = 16  # first guess of the characters max_length tokens need (grown until they suffice)
MARGIN = 8  # tokens past max_length before the cut, so the cut cannot change a kept token


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False  # the record had more than max_length tokens


def head_tokens(tokenizer, text: str, max_length: int, **kwargs) -> tuple[list[int], bool]:
    """Token ids of ``text`` — all of them, or, for a long text, at least the first ``max_length`` —
    and whether the text was cut before tokenizing.

    The text is cut at ``max_length * CHARS_PER_TOKEN`` characters (four times more while that gives
    fewer than ``max_length + MARGIN`` tokens). The cut lies ``MARGIN`` tokens beyond what is kept, so
    the kept tokens are those of the whole text whenever the tokenizer's pre-tokenizer splits the text
    there (BPE merges never cross a pre-token boundary); a text without any split point (one
    50-million-letter word) is the exception, and is cut anyway.
    """
    limit = max(1, max_length) * CHARS_PER_TOKEN
    while True:
        if len(text) <= limit:
            return tokenizer(text, **kwargs)["input_ids"], False
        ids = tokenizer(text[:limit], **kwargs)["input_ids"]
        if len(ids) >= max_length + MARGIN:
            return ids, True
        limit *= 4


def encode_example(tokenizer, example: dict, max_length: int) -> Encoded:
    """Token ids and labels for one training record (truncated to ``max_length``)."""
    eos = [tokenizer.eos_token_id]
    if "text" in example:
        ids, cut = head_tokens(tokenizer, example["text"], max_length)
        ids = ids + eos
        labels = list(ids)
    else:
        prompt, cut_p = head_tokens(tokenizer, example["prompt"], max_length)
        completion, cut_c = head_tokens(tokenizer, example["completion"], max_length, add_special_tokens=False)
        completion = completion + eos
        ids = prompt + completion
        labels = [IGNORE] * len(prompt) + completion
        cut = cut_p or cut_c
    return Encoded(ids[:max_length], labels[:max_length], cut or len(ids) > max_length)


def learnable(enc: Encoded) -> bool:
    """Whether a record keeps a token to learn: a label after the first position (a causal LM predicts token
    i + 1 from tokens 0..i, so a record cut to its first token, or to its prompt, teaches nothing)."""
    return any(label != IGNORE for label in enc.labels[1:])


def target_tokens(batch: dict) -> int:
    """Tokens a batch's loss is computed on (0: the loss is 0/0, NaN)."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())


def collate(batch: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` tensors."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, e in enumerate(batch):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def batch_stream(encoded: Sequence[Encoded], batch_size: int, pad_id: int, seed: int,
                 group_by_length: int = 0) -> Iterator[dict]:
    """Endless shuffled batches: every example once per epoch, order fixed by ``seed``.

    Steps, not epochs, are the unit of training in clbench (tier schedules count steps), so the stream
    never ends; the last partial batch of an epoch is dropped when the set is larger than one batch.

    ``group_by_length`` = k > 0 draws batches of similar length, so that less of each batch is padding:
    the epoch's shuffled order is cut into megabatches of k batches, each megabatch is sorted by length
    and split into batches, and the batches of a megabatch are trained in a random order. This is the
    idea of transformers' ``LengthGroupedSampler``, written here because that sampler trains a
    megabatch's batches longest first, the same length curriculum in every epoch; every example is still
    seen once per epoch. On the default stream (batch 32) k = 8 raises the real-token share of a batch
    from 0.71 to 0.91 (``docs/measurement.md``, where its cost in learning is measured too).
    """
    if not encoded:
        raise ValueError("cannot train on an empty set of examples")
    if group_by_length < 0:
        raise ValueError(f"group_by_length must be >= 0 (0 = off), got {group_by_length}")
    gen = torch.Generator().manual_seed(seed)
    size = min(batch_size, len(encoded))
    while True:
        order = torch.randperm(len(encoded), generator=gen).tolist()
        batches = [order[start:start + size] for start in range(0, len(order) - size + 1, size)]
        if group_by_length:
            batches = _length_grouped(batches, encoded, group_by_length, gen)
        for batch in batches:
            yield collate([encoded[i] for i in batch], pad_id)


def _length_grouped(batches: list[list[int]], encoded: Sequence[Encoded], k: int,
                    gen: torch.Generator) -> list[list[int]]:
    """The same examples re-batched by length within each run of ``k`` batches, in a random batch order."""
    size = len(batches[0])
    out: list[list[int]] = []
    for m in range(0, len(batches), k):
        mega = sorted((i for b in batches[m:m + k] for i in b), key=lambda i: len(encoded[i].input_ids))
        group = [mega[start:start + size] for start in range(0, len(mega), size)]
        out.extend(group[j] for j in torch.randperm(len(group), generator=gen).tolist())
    return out


def count_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Non-padding tokens in a batch (what tokens/s counts)."""
    return int(batch["attention_mask"].sum())
