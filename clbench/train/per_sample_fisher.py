"""EWC's per-sample diagonal Fisher from one batched forward and backward pass per mini-batch.

Kirkpatrick et al.'s empirical Fisher is the mean over samples of each sample's squared gradient, so the
plain way (``clbench.train.penalties.sample_losses``) runs one forward and backward pass per sample, a
few times slower than one batched pass (docs/findings.md, performance notes). For a linear layer
``y = x Wᵀ + b`` one sample's
gradient is ``Σ_t g_t x_tᵀ`` (``g_t = ∂loss_n/∂y_t`` at its positions ``t``) and ``Σ_t g_t``, and a batch's
backward pass of ``Σ_n loss_n`` already computes every ``g`` and ``x`` — they are only summed over the
batch before the weight gradient is formed. Forward hooks keep each layer's input, tensor hooks its
output gradient, and ``einsum`` forms the per-sample gradients (the method of Opacus's per-sample
gradient hooks, Goodfellow's 2015 trick; written here because Opacus is not a dependency and this needs
only the Linear case). Samples do not interact in a causal LM's batch (each row attends to its own
tokens; padding is masked and unlabelled), so these are the same gradients as the per-sample passes up
to float rounding.

Used for a causal LM's batches when every parameter whose Fisher is asked for is the weight or bias of a
``torch.nn.Linear`` (LoRA adapters: ``lora_A``/``lora_B`` are Linears) and the per-sample gradients of a
batch fit in ``MAX_BYTES``; otherwise :func:`linear_sample_fisher` returns ``None`` and the caller loops over samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from clbench.modeling.lm_loss import causal_lm_sample_losses

MAX_BYTES = 512 * 2**20  # per-sample gradients of one mini-batch held at once, at most


def linear_sample_fisher(model, params: Mapping[str, torch.Tensor],
                         batches: Iterable[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor] | None:
    """``{name: mean over samples of the squared per-sample gradient}`` for ``params``, or ``None`` when some
    parameter is not a Linear layer's weight or bias, or a batch's per-sample gradients would not fit."""
    batches = list(batches)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or not all("input_ids" in b and "labels" in b for b in batches):
        return None  # not a causal LM's batches (the digits cross-check's classifier): the caller's loop
    owners: dict[int, list[tuple[torch.nn.Module, str]]] = {}
    for module in model.modules():
        for kind, p in module._parameters.items():
            if p is not None:
                owners.setdefault(id(p), []).append((module, kind))
    owner = {i: found[0] for i, found in owners.items()
             if len(found) == 1 and isinstance(found[0][0], torch.nn.Linear) and found[0][1] in ("weight", "bias")}
    if not batches or any(id(p) not in owner for p in params.values()):
        return None  # e.g. a tied embedding: the lookup's share of its gradient is not a Linear's
    largest = max(len(b["input_ids"]) for b in batches)  # samples in one batch
    if largest * sum(p.numel() for p in params.values()) * 4 > MAX_BYTES:
        return None
    modules = {id(owner[id(p)][0]): owner[id(p)][0] for p in params.values()}
    per_sample: dict[tuple[int, str], torch.Tensor] = {}  # (module id, kind) -> (batch, *shape), this batch

    def add(module, kind: str, g: torch.Tensor) -> None:
        key = (id(module), kind)
        per_sample[key] = per_sample[key] + g if key in per_sample else g  # a layer used twice: gradients add

    def forward_hook(module, inputs, output):
        x = inputs[0].detach()

        def backward_hook(g):
            g3, x3 = g.float().reshape(g.shape[0], -1, g.shape[-1]), x.float().reshape(x.shape[0], -1, x.shape[-1])
            add(module, "weight", torch.einsum("bto,bti->boi", g3, x3))
            if module.bias is not None:
                add(module, "bias", g3.sum(1))

        if output.requires_grad:
            output.register_hook(backward_hook)

    handles = [m.register_forward_hook(forward_hook) for m in modules.values()]
    names = list(params)
    fisher = {n: torch.zeros_like(params[n], dtype=torch.float32) for n in names}
    count = 0
    try:
        for batch in batches:
            per_sample.clear()
            losses = causal_lm_sample_losses(model, batch)  # the output layer at labelled positions only
            tensors = [params[n] for n in names]
            torch.autograd.grad(losses.sum(), tensors, allow_unused=True)  # runs the hooks; its sums unused
            for n in names:
                module, kind = owner[id(params[n])]
                g = per_sample.get((id(module), kind))
                if g is not None:
                    fisher[n] += g.pow(2).sum(0).to(fisher[n].device)
            count += len(losses)
    finally:
        for h in handles:
            h.remove()
    return {n: (f / count).to(params[n].dtype) for n, f in fisher.items()}
