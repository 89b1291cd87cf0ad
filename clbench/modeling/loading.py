"""Load a local causal-LM checkpoint with transformers: the one path for the embedded and real models.

Nothing here reaches a hub: ``local_files_only=True`` is always passed, so a missing local file is an
error, never a download. Custom model code runs only when the user sets ``trust_remote_code``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from clbench.errors import ConfigError


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; otherwise the requested device, checked."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(requested)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("model.device", f"{requested!r} requested but CUDA is not available", ["auto", "cpu"])
    return dev


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    """``auto`` → bfloat16 on CUDA, float32 on CPU."""
    if requested == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, requested)


def load_causal_lm(path: str | Path, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False):
    """``(model, tokenizer)`` from a local directory, model on the chosen device and dtype."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path).expanduser()
    if not (path / "config.json").exists():
        raise ConfigError("model.path", f"{path} is not a local Hugging Face checkpoint (no config.json)")
    dev = pick_device(device)
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    if tok.pad_token_id is None:  # many causal LMs ship without one; padding is masked anyway
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=pick_dtype(dtype, dev),
                                                 trust_remote_code=trust_remote_code)
    return model.to(dev), tok
