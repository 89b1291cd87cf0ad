"""Load an mlx-lm model from a local directory: the embedded base model or a user's mlx-lm model.

The embedded base model is built (and cached) by ``clbench.modeling.tiny`` with transformers and saved
with ``save_pretrained``; mlx-lm reads that directory directly: a Llama-shaped checkpoint maps 1:1 onto
``mlx_lm.models.llama`` (same parameter names; mlx-lm's ``sanitize`` drops the tied output head), so
both backends start from bit-identical weights and the base-model rows agree (tested). A user's mlx-lm
model directory (converted, possibly quantized) loads through the same ``mlx_lm.utils.load_model``.

Nothing reaches the hub: the path must exist locally (``load_model`` itself never downloads; we check
the directory first so a typo is a clear error, not a download attempt elsewhere in mlx-lm).
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
from mlx import nn

from clbench.errors import ConfigError

DEVICES = ("auto", "cpu", "gpu")
DTYPES = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}


def use_device(requested: str = "auto") -> str:
    """Make ``requested`` MLX's default device; returns its name. ``auto`` keeps MLX's choice (the GPU
    on Apple silicon or with ``mlx[cuda]``, else the CPU)."""
    if requested not in DEVICES:
        raise ConfigError("model.device", f"{requested!r} is not an MLX device", DEVICES)
    if requested == "cpu":
        mx.set_default_device(mx.cpu)
    elif requested == "gpu":
        if not mx.is_available(mx.gpu):
            raise ConfigError("model.device", "'gpu' requested but MLX has no GPU here", ["auto", "cpu"])
        mx.set_default_device(mx.gpu)
    return str(mx.default_device())


def config_overrides(config: dict) -> dict:
    """Config fields mlx-lm would miss in a checkpoint saved by transformers >= 5.

    transformers 5 writes RoPE settings under ``rope_parameters`` (``{"rope_theta", "rope_type", ...}``);
    mlx-lm's model args read the older top-level ``rope_theta`` / ``rope_scaling`` and would silently fall
    back to their defaults (rope_theta 10000: wrong for e.g. Qwen2's 1e6).
    """
    rope = config.get("rope_parameters")
    if not isinstance(rope, dict) or "rope_theta" in config:
        return {}
    out = {"rope_theta": rope["rope_theta"]} if "rope_theta" in rope else {}
    if rope.get("rope_type", "default") != "default":
        out["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    return out


def load_tokenizer(path: Path, trust_remote_code: bool = False):
    """The checkpoint's own Hugging Face tokenizer, exactly as the torch backend loads it (so both
    backends encode training records and probes to the same token ids)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    if tok.pad_token_id is None:  # padding is never attended to (right padding, causal attention)
        if tok.eos_token_id is None:
            raise ConfigError("model.path", f"the tokenizer in {path} has neither a pad nor an EOS token")
        tok.pad_token = tok.eos_token
    return tok


def load_mlx_model(path: str | Path, dtype: str = "auto", trust_remote_code: bool = False):
    """``(model, tokenizer)`` from a local directory; ``dtype`` ``auto`` keeps the stored dtype."""
    import json

    from mlx_lm.utils import load_model

    path = Path(path).expanduser()
    if not (path / "config.json").exists():
        raise ConfigError("model.path", f"{path} is not a local model directory (no config.json)")
    config = json.loads((path / "config.json").read_text())
    try:
        model, _ = load_model(path, model_config=config_overrides(config), trust_remote_code=trust_remote_code)
    except FileNotFoundError as exc:  # no model*.safetensors
        raise ConfigError("model.path", f"{path}: {exc} (mlx-lm reads safetensors weights only)") from None
    except ValueError as exc:  # unknown model_type, custom code refused, weights that do not fit
        field = "model.trust_remote_code" if "trust_remote_code" in str(exc) else "model.path"
        raise ConfigError(field, f"mlx-lm cannot load {path}: {exc}") from None
    if dtype != "auto":
        if dtype not in DTYPES:
            raise ConfigError("model.dtype", f"{dtype!r} is not an MLX dtype", ["auto", *DTYPES])
        model.set_dtype(DTYPES[dtype])
    model.eval()
    return model, load_tokenizer(path, trust_remote_code)


def reference_model(like: nn.Module, seed: int) -> nn.Module:
    """An untrained model of ``like``'s architecture (forward transfer's reference ``b_j``).

    Built by mlx-lm's own model class with MLX's default initialisation under ``seed``; it differs from
    the torch backend's reference (torch's initialisation), which only moves chance-level scores.
    Weights are cast to the dtype of ``like``'s first floating parameter (bfloat16 for quantized models).
    """
    from mlx.utils import tree_flatten

    mx.random.seed(seed)
    ref = type(like)(like.args)
    floats = [v.dtype for _, v in tree_flatten(like.parameters()) if mx.issubdtype(v.dtype, mx.floating)]
    quantized = any(isinstance(m, nn.QuantizedLinear) for _, m in like.named_modules())
    ref.set_dtype(mx.bfloat16 if quantized else (floats[0] if floats else mx.float32))
    mx.eval(ref.parameters())
    ref.eval()
    return ref
