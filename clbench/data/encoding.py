"""Training examples → token tensors, and a seeded batch stream.

Two record shapes are accepted (the same as user JSONL files):

* ``{"text": ...}`` — language modelling on every token;
* ``{"prompt": ..., "completion": ...}`` — loss on the completion only (the prompt's labels are -100).

Prompt and completion are tokenized separately, exactly as the probes tokenize a prompt and score a
continuation, so a fact learned in training is the token sequence a probe asks for.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]


def encode_example(tokenizer, example: dict, max_length: int) -> Encoded:
    """Token ids and labels for one training record (truncated to ``max_length``)."""
    eos = [tokenizer.eos_token_id]
    if "text" in example:
        ids = tokenizer(example["text"])["input_ids"] + eos
        labels = list(ids)
    else:
        prompt = tokenizer(example["prompt"])["input_ids"]
        completion = tokenizer(example["completion"], add_special_tokens=False)["input_ids"] + eos
        ids = prompt + completion
        labels = [IGNORE] * len(prompt) + completion
    return Encoded(ids[:max_length], labels[:max_length])


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


def batch_stream(encoded: Sequence[Encoded], batch_size: int, pad_id: int, seed: int) -> Iterator[dict]:
    """Endless shuffled batches: every example once per epoch, order fixed by ``seed``.

    Steps, not epochs, are the unit of training in clbench (tier schedules count steps), so the stream
    never ends; the last partial batch of an epoch is dropped when the set is larger than one batch.
    """
    if not encoded:
        raise ValueError("cannot train on an empty set of examples")
    gen = torch.Generator().manual_seed(seed)
    size = min(batch_size, len(encoded))
    while True:
        order = torch.randperm(len(encoded), generator=gen).tolist()
        for start in range(0, len(order) - size + 1, size):
            yield collate([encoded[i] for i in order[start:start + size]], pad_id)


def count_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Non-padding tokens in a batch (what tokens/s counts)."""
    return int(batch["attention_mask"].sum())
