"""LoRA through mlx-lm's tuner, configured by the torch backend's ``LoraOptions`` (same YAML keys:
``lora: {rank, alpha, dropout, target_modules}``).

Mapping to mlx-lm: its config key is ``scale`` (the multiplier of the low-rank product), so
``scale = alpha / rank`` as in peft; ``num_layers`` counts blocks *from the last one*, so every block
gets adapters with ``num_layers = len(model.layers)``. With no ``target_modules``, mlx-lm adapts every
linear layer inside the blocks (the output head is outside them), the same set as peft's
``"all-linear"`` for Llama-shaped models. Initialisation matches peft's in distribution (A uniform in
±1/sqrt(fan_in), B zero), drawn from MLX's generator (seeded by the runner).
"""

from __future__ import annotations

from mlx import nn

from clbench.errors import ConfigError


def target_keys(model: nn.Module, targets: list[str]) -> list[str]:
    """Block-relative module paths (``self_attn.q_proj``) whose last component is in ``targets``."""
    found = {path for path, _ in model.layers[0].named_modules() if path}
    keys = sorted(p for p in found if p.split(".")[-1] in targets)
    missing = sorted(set(targets) - {k.split(".")[-1] for k in keys})
    if missing:
        raise ConfigError("strategies[].options.lora.target_modules", f"no module named {missing[0]!r} in a block",
                          sorted({p.split(".")[-1] for p in found}))
    return keys


def add_lora(model: nn.Module, rank: int, alpha: float, dropout: float = 0.0,
             target_modules: list[str] | None = None, skip_bottom: int = 0) -> nn.Module:
    """Freeze ``model`` and add fresh LoRA adapters to every block but the first ``skip_bottom`` (mlx-lm
    counts ``num_layers`` from the last block); only the adapters stay trainable."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    config = {"rank": rank, "scale": alpha / rank, "dropout": dropout}
    if target_modules:
        config["keys"] = target_keys(model, list(target_modules))
    model.freeze()
    linear_to_lora_layers(model, len(model.layers) - skip_bottom, config)
    return model


def prepare_lora_or_full(model: nn.Module, options) -> nn.Module:
    """``options.mode``: ``lora`` (adapters only) or ``full`` (every weight trainable); ``freeze_bottom``:
    the first k blocks keep their weights (no adapters; in full mode frozen, with the embeddings)."""
    k = options.freeze_bottom
    if k >= len(model.layers):
        raise ConfigError("strategies[].options.freeze_bottom", f"{k} freezes every one of the model's "
                          f"{len(model.layers)} blocks; at most {len(model.layers) - 1}")
    if options.mode == "full":
        model.unfreeze()
        if k:
            for block in model.layers[:k]:
                block.freeze()
            embeddings = getattr(getattr(model, "model", None), "embed_tokens", None)
            if embeddings is not None:
                embeddings.freeze()
        return model
    lora = options.lora
    return add_lora(model, lora.rank, lora.alpha, lora.dropout, list(lora.target_modules) or None, k)
