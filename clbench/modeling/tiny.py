"""The embedded base model: a tiny Llama-shaped LM trained from scratch, cached on disk.

Why pretrain at all: a benchmark of forgetting needs a model that knows something. The base model
learns the stream's *pretrained* tasks (``general`` world facts) with full-parameter training, plus
background documents of the other domains written about *different* fictional entities, so that it
knows the language of medical notes and meeting notes but none of the facts the stream will teach.

The result is saved with ``save_pretrained`` and loaded back with ``from_pretrained`` from the local
directory, the same code path a real checkpoint takes. The cache key hashes the model config, the
corpus and the seed; a finished build has ``build.json``, so an interrupted build is simply redone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from clbench.config.experiment import ModelConfig
from clbench.data.encoding import batch_stream, count_tokens, encode_example, learnable
from clbench.data.streams import Stream
from clbench.errors import ConfigError, DivergenceError
from clbench.paths import component, inside
from clbench.progress import bar
from clbench.results.files import atomic_write_json, atomic_write_jsonl
from clbench.results.integrity import folder_sums, intact_build
from clbench.results.lock import describe, hold

PIECE_CHARS = 1 << 16  # the tokenizer trainer reads the stream's text in pieces of at most this many characters
PRETRAIN_FIELDS = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "vocab_size",
                   "pretrain_steps", "pretrain_lr", "pretrain_batch_size", "seed", "max_length")


def _record_text(rec: dict) -> str:
    return rec["text"] if "text" in rec else rec["prompt"] + rec["completion"]


def pretrain_corpus(stream: Stream) -> list[dict]:
    """Training records of the pretrained tasks plus the stream's background documents."""
    return [r for t in stream.pretrained_tasks for r in t.train] + list(stream.background)


def tokenizer_corpus(stream: Stream) -> list[str]:
    """All training text of the stream (spellings only: the tokenizer stores no association)."""
    return [_record_text(r) for t in stream.tasks for r in t.train] + [_record_text(r) for r in stream.background]


def _split_point(text: str, lo: int, hi: int) -> int:
    """The last index ``p`` in ``(lo, hi)`` where ``text[p]`` is a space, tab or newline and ``text[p + 1]``
    is not whitespace, else ``hi`` (``str.rfind`` per character, so a text without one costs little)."""
    while hi > lo + 1:
        p = max(text.rfind(c, lo + 1, hi) for c in " \n\t\r")
        if p < 0:
            break
        if p + 1 < len(text) and not text[p + 1].isspace():
            return p
        hi = p
    return hi


def bounded_pieces(texts: Iterable[str], size: int = PIECE_CHARS) -> Iterator[str]:
    """``texts`` in pieces of at most ``size`` characters, for the tokenizer trainer.

    Byte-level BPE learns from the counts of pre-tokens (a word with the space before it, a run of
    whitespace), so a text cut where its pre-tokenizer splits anyway teaches the same tokenizer as the
    whole text: a piece ends before a whitespace character that is followed by a non-space (``"a  | word"``:
    the pre-tokens ``a``, ``" "``, ``" word"`` are the whole text's). Fed whole, one 50 MB record made the
    trainer hold all its pre-tokens at once (gigabytes); in pieces it holds one piece's. A stretch without
    such a point (one endless word) is cut at ``size``.
    """
    for text in texts:
        start = 0
        while len(text) - start > size:
            cut = _split_point(text, start, start + size)
            yield text[start:cut]
            start = cut
        yield text[start:]


def cache_key(cfg: ModelConfig, stream: Stream) -> str:
    """A hash of the model config and the corpus, fed to SHA-256 a JSON chunk at a time (the same bytes as
    ``json.dumps`` of the whole, so keys of models built earlier stay valid; no copy of the corpus is made)."""
    h = hashlib.sha256(json.dumps({k: getattr(cfg, k) for k in PRETRAIN_FIELDS}, sort_keys=True).encode())
    for chunk in json.JSONEncoder(sort_keys=True).iterencode([pretrain_corpus(stream), tokenizer_corpus(stream)]):
        h.update(chunk.encode())
    return h.hexdigest()[:16]


def build_config(cfg: ModelConfig, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
        max_position_embeddings=max(128, 2 * cfg.max_length), tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def pretrain(model, tokenizer, records: list[dict], cfg: ModelConfig, progress: bool = True) -> list[dict]:
    """Full-parameter AdamW training from scratch; linear warm-up then linear decay to 10%."""
    encoded = [encode_example(tokenizer, r, cfg.max_length) for r in records]
    kept = [e for e in encoded if learnable(e)]  # a batch of records with nothing to learn has a NaN loss
    if not kept:
        raise ConfigError("model.max_length", f"no pretraining record keeps a token to learn within "
                          f"model.max_length={cfg.max_length} tokens (the prompts fill it); raise model.max_length")
    batches = batch_stream(kept, cfg.pretrain_batch_size, tokenizer.pad_token_id, seed=cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain_lr, weight_decay=0.01)
    warm, total = max(1, cfg.pretrain_steps // 20), cfg.pretrain_steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.1, 1 - s / total))
    model.train()
    log = []
    for step in bar(range(1, total + 1), desc="pretrain base model", enabled=progress, unit="step"):
        t0 = time.perf_counter()
        batch = next(batches)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        log.append({"step": step, "loss": float(loss.detach()), "lr": sched.get_last_lr()[0],
                    "step_time": time.perf_counter() - t0, "tokens": count_tokens(batch)})
    if not math.isfinite(log[-1]["loss"]):
        raise DivergenceError("base-model pretraining diverged (loss is not finite); lower model.pretrain_lr")
    return log


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's CPU threads set to ``n`` for the block (0: unchanged), then restored."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def base_model_path(cfg: ModelConfig, stream: Stream, cache_dir: Path) -> Path:
    """Where the embedded base model for ``stream`` is (or will be) cached: computed, nothing built."""
    return inside(cache_dir, "base_models", f"{component(stream.name)}-{cache_key(cfg, stream)}")


def build_base_model(cfg: ModelConfig, stream: Stream, cache_dir: Path, progress: bool = True,
                     threads: int = 0) -> Path:
    """Directory of the cached base model for ``stream``, building it first if needed (or if its files no
    longer match the checksums recorded when it was built), with ``threads`` torch threads (the run's
    ``train.threads``; 0: torch's default). The build runs in the grid's own process, before any run, so
    without this it would take every core of a machine shared by others."""
    target = base_model_path(cfg, stream, cache_dir)
    if intact_build(target):
        return target

    def waiting(info):
        print(f"clbench: waiting for {describe(info)}, which is building the base model {target}", file=sys.stderr)

    with hold(target.with_name(target.name + ".building"), wait=True, on_wait=waiting), torch_threads(threads):
        return _build(cfg, stream, target, progress)  # one builder at a time


def _build(cfg: ModelConfig, stream: Stream, target: Path, progress: bool) -> Path:
    from transformers import LlamaForCausalLM

    from clbench.modeling.tokenizer import train_bpe_tokenizer

    if intact_build(target, quiet=True):  # built by the process this one waited for
        return target
    records = pretrain_corpus(stream)
    if not records and cfg.pretrain_steps > 0:
        raise ConfigError("model.pretrain_steps", f"stream {stream.name!r} has nothing to pretrain the embedded model on: mark a task "
                           "'pretrained: true', add 'pretrain_background', or set model.pretrain_steps=0")
    t0 = time.perf_counter()
    tokenizer = train_bpe_tokenizer(bounded_pieces(tokenizer_corpus(stream)), cfg.vocab_size)
    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(build_config(cfg, tokenizer))
    log = pretrain(model, tokenizer, records, cfg, progress) if cfg.pretrain_steps > 0 else []
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    atomic_write_jsonl(tmp / "pretrain_log.jsonl", log)
    atomic_write_json(tmp / "build.json", {"files_sha256": folder_sums(tmp, skip=("build.json",)),
        "stream": stream.name, "stream_fingerprint": stream.fingerprint(), "model": {k: getattr(cfg, k) for k in PRETRAIN_FIELDS},
        "parameters": sum(p.numel() for p in model.parameters()), "pretrain_records": len(records),
        "seconds": time.perf_counter() - t0, "final_loss": log[-1]["loss"] if log else None})
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target
