"""Load a local causal-LM checkpoint with transformers: the one path for the embedded and real models.

Nothing here reaches a hub: ``local_files_only=True`` is always passed, so a missing local file is an
error, never a download. Custom model code runs only when the user sets ``trust_remote_code``.

The checkpoint's own tokenizer is loaded from the same folder (with its chat template, if it ships one:
see ``clbench.modeling.chat``). Device: ``auto`` picks CUDA when available, else CPU; dtype ``auto`` is
bfloat16 on CUDA (what current checkpoints are trained in; half the memory of float32) and float32 on
CPU. Mixed precision is separate (``model.autocast``, :func:`pick_autocast`): float32 weights, optimizer
state and gradients, with the matrix products computed in bfloat16 by ``torch.autocast`` — the usual
bf16 mixed-precision recipe, which on a CPU with AVX512-BF16 (measured: AMD EPYC, one thread, SmolLM2-135M
with LoRA) makes a training step 1.9× and a probe row 2.8× faster.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from clbench.errors import ConfigError

DEVICES = ["auto", "cpu", "cuda", "cuda:N", "mps"]


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; otherwise the requested device, checked."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(requested)
    except RuntimeError:
        raise ConfigError("model.device", f"unknown device {requested!r}", DEVICES) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("model.device", f"{requested!r} requested but CUDA is not available", ["auto", "cpu"])
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError("model.device", f"{requested!r} requested but only {torch.cuda.device_count()} "
                              "CUDA device(s) are visible")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("model.device", f"{requested!r} requested but MPS is not available", ["auto", "cpu"])
    return dev


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    """``auto`` → bfloat16 on CUDA, float32 on CPU."""
    if requested == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, requested)


AUTOCAST = ["none", "auto", "bfloat16"]


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 matrix products in hardware (where autocast pays): a CUDA GPU
    that supports bf16, or a CPU with AVX512-BF16 or AMX tiles (without them torch emulates bf16, slower
    than float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def pick_autocast(requested: str, device: torch.device, dtype: torch.dtype) -> torch.dtype | None:
    """The dtype ``torch.autocast`` computes in (``None``: no autocast) for ``model.autocast``.

    ``none`` → no autocast; ``bfloat16`` → bfloat16 wherever asked; ``auto`` → bfloat16 when the weights are float32
    and ``device`` computes bf16 natively (:func:`native_bf16`), else none (bf16 weights already compute in
    bf16). Every result records what this resolved to (``provenance.json``: ``numerics``), since ``auto``
    resolves differently on another machine.
    """
    if requested not in AUTOCAST:
        raise ConfigError("model.autocast", f"unknown value {requested!r}", AUTOCAST)
    if requested == "none":
        return None
    if requested == "bfloat16":
        return torch.bfloat16
    return torch.bfloat16 if dtype == torch.float32 and native_bf16(device) else None


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` on ``device`` in ``dtype`` (what :func:`pick_autocast` returned), or a no-op
    context when it is ``None``: the one way the run, the probe view and ``clbench perf`` enter it."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def _checkpoint_dir(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not (path / "config.json").exists():
        raise ConfigError("model.path", f"{path} is not a local Hugging Face checkpoint (no config.json)")
    return path


@contextlib.contextmanager
def _remote_code_refused(path: Path):
    """transformers refuses a checkpoint's own code with a ValueError; name the clbench option instead."""
    try:
        yield
    except ValueError as exc:
        if "trust_remote_code" not in str(exc):
            raise
        raise ConfigError("model.trust_remote_code", f"{path} ships its own model code, which runs only with "
                          "model.trust_remote_code: true (read that code first)") from None


PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")


def check_weights(path: Path) -> None:
    """``path`` holds safetensors weights; pickle weights (``pytorch_model.bin``) are refused with how to
    convert them — a pickle can run code when it is loaded, and clbench loads no weights that way."""
    if any(path.glob("*.safetensors")):
        return
    pickles = sorted({p.name for pattern in PICKLE_WEIGHTS for p in path.glob(pattern)})
    if pickles:
        raise ConfigError("model.path", f"{path} holds pickle weights ({', '.join(pickles)}); clbench loads safetensors "
                          "only: convert it with transformers, once, in an environment you trust: python -c \"import "
                          "sys, transformers as t; src, dst = sys.argv[1:]; "
                          "t.AutoModelForCausalLM.from_pretrained(src).save_pretrained(dst); "
                          f"t.AutoTokenizer.from_pretrained(src).save_pretrained(dst)\" {path} {path}-safetensors")
    raise ConfigError("model.path", f"{path} holds no model weights (*.safetensors)")


def check_checkpoint(path: str | Path, trust_remote_code: bool = False) -> Path:
    """``path`` if it holds a model config and a tokenizer transformers can read, else ``ConfigError``.

    Cheap (no weights are read): the grid calls it before any run directory is written, so a wrong
    ``model.path`` leaves nothing behind that a corrected command would have to clean up.
    """
    from transformers import AutoConfig, AutoTokenizer

    path = Path(path).expanduser()
    if not path.is_dir():
        raise ConfigError("model.path", f"{path} is not a folder (a local Hugging Face checkpoint)")
    path = _checkpoint_dir(path)
    with _remote_code_refused(path):
        for what, auto in (("model config", AutoConfig), ("tokenizer", AutoTokenizer)):
            try:
                auto.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
            except (OSError, ValueError, KeyError) as exc:
                if "trust_remote_code" in str(exc):
                    raise
                raise ConfigError("model.path", f"cannot read the {what} in {path}: {type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    check_weights(path)
    return path


def load_causal_lm(path: str | Path, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False):
    """``(model, tokenizer)`` from a local directory, model on the chosen device and dtype."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = _checkpoint_dir(path)
    dev = pick_device(device)
    with _remote_code_refused(path):
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=pick_dtype(dtype, dev),
                                                     trust_remote_code=trust_remote_code)
    if tok.pad_token_id is None:  # many causal LMs ship without one; padding is masked anyway
        if tok.eos_token_id is None:
            raise ConfigError("model.path", f"the tokenizer in {path} has neither a pad nor an EOS token")
        tok.pad_token = tok.eos_token
    rows = model.get_input_embeddings().num_embeddings
    if len(tok) > rows:  # a token id past the embedding would fail mid-run with an index error
        raise ConfigError("model.path", f"the tokenizer in {path} has {len(tok)} tokens but the model's embedding "
                          f"has {rows} rows; save the tokenizer that belongs to this model")
    return model.to(dev), tok


def reference_model(path: str | Path, seed: int, device: torch.device, dtype: torch.dtype,
                    trust_remote_code: bool = False):
    """A randomly initialised model of the checkpoint's architecture (forward transfer's reference b_j).

    Built from the checkpoint's ``config.json`` alone, so it works for any local checkpoint (custom
    architectures too when ``trust_remote_code`` is on); no weight file is read.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    path = _checkpoint_dir(path)
    with _remote_code_refused(path):
        config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)
    return model.to(device)
