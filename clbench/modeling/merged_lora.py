"""LoRA layers computed as one matrix product with their merged weight, for an evaluation row in mixed precision.

Why this exists: under ``torch.autocast`` a peft LoRA layer is three bf16 products and a scaled add —
``bf16(W)·x + s·B(A x)`` — and on SmolLM2-135M (210 adapted layers, small batches) the adapter's extra
products, casts, scaling and add are a fifth of an evaluation row. While nothing trains, the layer's weight
is fixed, so it can be computed as one product with ``bf16(W + s·BA)`` (``get_delta_weight``, peft's own
delta, summed over the active adapters), which is what peft's ``merge`` does, without its in-place
float32 ``W += ΔW`` / ``W -= ΔW`` that would leave the base weight off by a rounding after ``unmerge``.

This is the same model computed differently, not bitwise the same numbers: the bf16 rounding of the
merged weight replaces those of ``W`` and of the adapter's own products (both of order ``2⁻⁹ |W|``; an
exact-match answer can flip on a near tie). So it is used only where the run computes in bf16 anyway
(``model.autocast``), only for evaluation rows (``TorchBackend.evaluation_weights``), never in training;
a float32 run's rows are untouched.

* Only peft ``lora.Linear`` layers over an ``nn.Linear`` with a float32 weight, with plain adapters (no
  DoRA or other variant, no adapter bias), not already merged and not disabled, are merged; others run
  as before.
* On exit (also on an exception) every base weight gets its float32 tensor back — the same storage — and
  every layer its unmerged state. An adapter weight written during the phase (its version counter moved)
  is an error at the end: the merged weight did not see the write.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


def _mergeable(layer) -> bool:
    from peft.tuners.lora.layer import Linear as LoraLinear

    if not isinstance(layer, LoraLinear) or layer.merged or layer.disable_adapters:
        return False
    base = layer.get_base_layer()
    active = [a for a in layer.active_adapters if a in layer.lora_A]
    return (type(base) is torch.nn.Linear and base.weight.dtype == torch.float32 and bool(active)
            and not any(getattr(layer, "lora_variant", {}).get(a) for a in active)
            and not any(getattr(layer, "lora_bias", {}).get(a) for a in active))


@contextmanager
def lora_merged(model: torch.nn.Module, dtype: torch.dtype | None):
    """Within the ``with``: every mergeable LoRA layer of ``model`` computes ``base_layer`` alone, whose
    weight is ``(W + Σ ΔW).to(dtype)`` (nothing when ``dtype`` is None); yields the number of layers merged."""
    if dtype is None:
        yield 0
        return
    merged: list[tuple[object, torch.nn.Parameter, torch.Tensor, list[tuple[torch.Tensor, int]]]] = []
    try:
        with torch.no_grad():
            for layer in model.modules():
                if not _mergeable(layer):
                    continue
                active = [a for a in layer.active_adapters if a in layer.lora_A]
                weight = layer.get_base_layer().weight
                delta = sum(layer.get_delta_weight(a) for a in active)
                adapters = [(w, w._version) for a in active for w in (layer.lora_A[a].weight, layer.lora_B[a].weight)]
                merged.append((layer, weight, weight.data, adapters))
                weight.data = (weight.data + delta).to(dtype)
                layer.merged_adapters = list(active)  # peft's forward: base_layer only
        yield len(merged)
        stale = [layer for layer, _, _, adapters in merged if any(w._version != v for w, v in adapters)]
        if stale:
            names = {id(m): n for n, m in model.named_modules()}
            raise RuntimeError(f"LoRA weights were written while merged for evaluation, so the merged weights are stale: "
                               f"{[names.get(id(layer), '?') for layer in stale[:3]]}")
    finally:
        for layer, weight, original, _ in merged:
            weight.data = original
            layer.merged_adapters = []
