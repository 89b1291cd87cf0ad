"""Frozen linear weights held in the autocast dtype for the length of a task's training.

Why this exists: ``torch.autocast`` casts a float32 weight to bfloat16 at every op that uses it, and keeps
the cast only for a leaf that *requires grad*, only within one autocast region. Every weight of a LoRA
model but its adapters is frozen, so each training step casts all of them again (134M on SmolLM2-135M).
While a weight stays frozen its cast is the same tensor every time, so casting it once for the task gives
bitwise the same products (autocast leaves a tensor that is already bfloat16 alone and casts the
activations as before) for less work: a CPU training step on SmolLM2 went 0.73 → 0.67 s (0.63 → 0.57 s
with ``train.attention_kernel: math``). Probe views do not use it: there it measured no faster (64
multiple-choice and 64 generation items, bf16, one thread).

* Only ``torch.nn.Linear`` weights (the ops autocast casts) that are frozen and float32 when the phase
  starts are cast; trainable parameters (adapters, full fine-tuning), norms and embeddings stay float32.
* A weight shared with a module that is not a Linear (tied input/output embeddings: the embedding lookup
  is not autocast, its float32 output feeds the residual stream) is not changed in place: the Linear gets
  its own bfloat16 copy for the phase, the embedding keeps the float32 tensor.
* On exit (also on an exception) every parameter gets its float32 tensor back — the same storage, so
  nothing is rounded — and every Linear its original parameter object.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager

import torch


@contextmanager
def frozen_weights_cast(model: torch.nn.Module, dtype: torch.dtype | None):
    """Within the ``with``: ``model``'s frozen float32 Linear weights are ``dtype`` tensors (nothing when
    ``dtype`` is None); yields the number of weights cast."""
    if dtype is None:
        yield 0
        return
    owners: dict[int, list[torch.nn.Module]] = defaultdict(list)
    for module in model.modules():
        for p in module.parameters(recurse=False):
            owners[id(p)].append(module)
    in_place: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
    untied: list[tuple[torch.nn.Module, torch.nn.Parameter]] = []
    try:
        for module in model.modules():
            w = module._parameters.get("weight") if isinstance(module, torch.nn.Linear) else None
            if w is None or w.requires_grad or w.dtype != torch.float32:
                continue
            if all(isinstance(m, torch.nn.Linear) for m in owners[id(w)]):
                in_place.append((w, w.data))  # a weight two Linears share is bf16 by the second: skipped
                w.data = w.data.to(dtype)
            else:
                untied.append((module, w))
                module._parameters["weight"] = torch.nn.Parameter(w.detach().to(dtype), requires_grad=False)
        yield len(in_place) + len(untied)
    finally:
        for w, original in in_place:
            w.data = original
        for module, w in untied:
            module._parameters["weight"] = w
