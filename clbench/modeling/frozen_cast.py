"""Frozen linear weights held in the autocast dtype for the length of a task's training, hooks or evaluation.

Why this exists: ``torch.autocast`` casts a float32 weight to bfloat16 at every op that uses it, and keeps
the cast only for a leaf that *requires grad*, only within one autocast region. Every weight of a LoRA
model but its adapters is frozen, so each training step casts all of them again (134M on SmolLM2-135M).
While a weight stays frozen its cast is the same tensor every time, so casting it once for the task gives
bitwise the same products (autocast leaves a tensor that is already bfloat16 alone and casts the
activations as before) for less work (about a tenth of a CPU training step on SmolLM2: docs/findings.md,
performance notes). The run also holds it around a task's hooks (EWC's Fisher), and
a probe view (``clbench.eval.torch_lm.TorchLM``) holds it for its lifetime over every Linear weight, frozen
or not (``trainable_too``: a view computes no gradient of them), so an evaluation row (the same scores)
and a greedy decoding step, which reads every weight once, no longer cast all of them first.

* Only ``torch.nn.Linear`` weights (the ops autocast casts) that are frozen and float32 when the phase
  starts are cast; trainable parameters (adapters, full fine-tuning), norms and embeddings stay float32,
  and so do the weights given as ``keep``: the ones a strategy trains without a gradient (the CMS memory's
  local rule changes weights that never require one — cast, its updates would land in the bf16 copy and
  be thrown away at the end of the task).
* A cast weight that is written in place during the phase (its version counter moved) is an error at the
  end of the phase, naming it: the write went to the copy and is lost, so it must be in ``keep``.
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
def frozen_weights_cast(model: torch.nn.Module, dtype: torch.dtype | None, keep=(), trainable_too: bool = False):
    """Within the ``with``: ``model``'s frozen float32 Linear weights but those in ``keep`` are ``dtype``
    tensors (nothing when ``dtype`` is None); yields the number of weights cast. ``trainable_too``: weights
    that require grad as well, for a phase that computes no gradient of them (a probe view)."""
    if dtype is None:
        yield 0
        return
    kept = {id(p) for p in keep}
    owners: dict[int, list[torch.nn.Module]] = defaultdict(list)
    for module in model.modules():
        for p in module.parameters(recurse=False):
            owners[id(p)].append(module)
    in_place: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
    untied: list[tuple[torch.nn.Module, torch.nn.Parameter]] = []
    try:
        for module in model.modules():
            w = module._parameters.get("weight") if isinstance(module, torch.nn.Linear) else None
            if w is None or (w.requires_grad and not trainable_too) or w.dtype != torch.float32 or id(w) in kept:
                continue
            if all(isinstance(m, torch.nn.Linear) for m in owners[id(w)]):
                in_place.append((w, w.data))  # a weight two Linears share is bf16 by the second: skipped
                w.data = w.data.to(dtype)
            else:
                untied.append((module, w))
                module._parameters["weight"] = torch.nn.Parameter(w.detach().to(dtype), requires_grad=w.requires_grad)
        # (the parameter the run knows, the one holding the cast, its version now)
        watched = [(w, w, w._version) for w, _ in in_place]
        watched += [(w, m._parameters["weight"], m._parameters["weight"]._version) for m, w in untied]
        yield len(watched)
        names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
        written = [names.get(id(w), "?") for w, held, version in watched if held._version != version]
        if written:
            raise RuntimeError(f"frozen weights were written in place while held in {dtype}, so the writes are lost: "
                               f"{written[:3]}; a strategy that changes them must list them in its trainable "
                               "parameters (frozen_weights_cast's keep)")
    finally:
        for w, original in in_place:
            w.data = original
        for module, w in untied:
            module._parameters["weight"] = w
