"""One MLX run: the torch runner's order of work and files (``clbench.runner``), with an mlx-lm model.

Same run directory, written by the same functions: ``config.json`` (``run_record``), provenance, the
reference and base rows and one row per task (``_write_row``), per-step logs, then matrices, metrics and
``DONE`` (``finalize``, which reads only stored rows). What is MLX-specific lives here:

* the model: ``mlx_lm.utils.load_model`` on the base directory (the embedded model's torch checkpoint
  loads as-is: identical starting weights to the torch backend);
* checkpoints: ``checkpoints/task_<t>/adapter.safetensors`` written by ``mx.save_safetensors`` (trainable
  tensors only, tier map and diagnostics in the metadata) and ``strategy_state.pt`` (``torch.save`` of
  plain data and tensors converted from MLX, so the layout and its readers stay backend-neutral);
* resume: the adapter, strategy state and (with ``reset_optimizer: false``) the AdamW state of the last
  finished task are loaded; every task re-seeds from ``(seed, task index)``.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from pathlib import Path

import mlx.core as mx
import numpy as np

from clbench.backends.mlx.lm import MLXLM
from clbench.backends.mlx.model import load_mlx_model, reference_model, use_device
from clbench.backends.mlx.optim import PerTensor, adamw
from clbench.backends.mlx.strategies import make_strategy
from clbench.backends.mlx.strategy import MLXStrategy
from clbench.backends.mlx.trainer import train_task
from clbench.config import ExperimentConfig, StrategySpec
from clbench.data import encode_example
from clbench.errors import ConfigError
from clbench.evaluator import evaluate_row
from clbench.provenance import provenance
from clbench.results import (
    RunFiles,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_jsonl,
    read_json,
    run_dir,
)
from clbench.runner import _same_experiment, _write_row, finalize, run_record, seed_everything, task_seed
from clbench.strategy import TaskView
from clbench.streams import Stream

MLX_PROBE_KINDS = ("exact_match", "multiple_choice", "perplexity")


def atomic_save_safetensors(path: Path, arrays: dict[str, mx.array], metadata: dict[str, str]) -> None:
    """``mx.save_safetensors`` to a temporary file in the same directory, fsync, rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".safetensors")
    os.close(fd)
    try:
        mx.save_safetensors(tmp, arrays, metadata=metadata)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def to_torch(arrays: dict[str, mx.array]) -> dict:
    """MLX arrays as torch tensors for ``torch.save`` (floats as float32, integers as int64)."""
    import torch

    out = {}
    for k, a in arrays.items():
        a = a.astype(mx.float32) if mx.issubdtype(a.dtype, mx.floating) else a.astype(mx.int64)
        out[k] = torch.from_numpy(np.array(a))
    return out


def optimizer_state_from_torch(tensors: dict, params: dict[str, mx.array]) -> dict[str, mx.array]:
    """Inverse of :func:`to_torch` for :meth:`PerTensor.state_tensors`: the step counter back to uint64,
    the learning rate to float32, moments to their parameter's dtype."""
    out = {}
    for k, t in tensors.items():
        name, _, part = k.rpartition("/")
        arr = mx.array(t.numpy())
        dtype = {"step": mx.uint64, "learning_rate": mx.float32}.get(part, params[name].dtype)
        out[k] = arr.astype(dtype)
    return out


def save_checkpoint(files: RunFiles, t: int, strategy: MLXStrategy, model, meta: dict,
                    optimizer: PerTensor | None = None) -> None:
    import torch

    ckpt = files.checkpoint(t)
    metadata = {"clbench": json.dumps({**meta, **strategy.checkpoint_metadata()}, sort_keys=True, default=str)}
    atomic_save_safetensors(ckpt / "adapter.safetensors", strategy.checkpoint_tensors(model), metadata)
    buf = io.BytesIO()
    torch.save({"strategy": strategy.state_dict(),
                "optimizer": to_torch(optimizer.state_tensors()) if optimizer is not None else None}, buf)
    atomic_write_bytes(ckpt / "strategy_state.pt", buf.getvalue())


def load_checkpoint(files: RunFiles, t: int, strategy: MLXStrategy, model) -> dict:
    import torch

    ckpt = files.checkpoint(t)
    strategy.load_checkpoint_tensors(model, mx.load(str(ckpt / "adapter.safetensors")))
    state = torch.load(ckpt / "strategy_state.pt", weights_only=True)
    strategy.load_state_dict(state["strategy"])
    return state


def check_stream(stream: Stream) -> None:
    """The probe kinds the MLX view can answer: lm-eval suites run through ``clbench.lm_eval_probe``'s
    ``TemplateLM``, which drives a torch model, so they need the torch backend."""
    for task in stream.tasks:
        for suite in task.probes:
            if suite.kind not in MLX_PROBE_KINDS:
                raise ConfigError(f"{stream.source}: task {task.name!r}, suite {suite.name!r}",
                                  f"probe kind {suite.kind!r} is not available with model.backend: mlx",
                                  MLX_PROBE_KINDS)


def run_one(cfg: ExperimentConfig, stream: Stream, spec: StrategySpec, seed: int, base_dir: Path,
            progress: bool = True) -> tuple[Path, str]:
    """Run (or finish, or skip) one MLX run; returns its directory and ``"done"``/``"skipped"``/``"resumed"``."""
    check_stream(stream)
    files = RunFiles(run_dir(cfg, stream.name, spec, seed))
    record = run_record(cfg, stream, spec, seed, base_dir)
    if files.config.exists():
        if not _same_experiment(read_json(files.config), record):
            raise ConfigError(str(files.config), "this run directory holds results of a different config; "
                              "choose another experiment name or delete the directory")
        if files.done.exists():
            return files.root, "skipped"
    device = use_device(cfg.model.device)
    atomic_write_json(files.config, record)
    if not files.provenance.exists():
        atomic_write_json(files.provenance, {**provenance(), "backend": "mlx", "mlx_device": device})

    T = len(stream.tasks)
    start = files.finished_tasks(T)
    status = "resumed" if start > 0 else "done"
    model, tok = load_mlx_model(base_dir, cfg.model.dtype, cfg.model.trust_remote_code)
    if cfg.model.use_chat_template:  # the same tokenizer and template as the torch backend
        from clbench.modeling.chat import chat_stream

        stream = chat_stream(stream, tok)
    strategy = make_strategy(spec, seed, cfg)
    seed_everything(seed)
    mx.random.seed(seed)  # LoRA initialisation draws from MLX's generator
    model = strategy.prepare_model(model)
    strategy.mark_trainable(model)

    def evaluate(m, desc: str) -> dict:
        with MLXLM(m, tok, batch_size=cfg.eval.batch_size) as lm:
            return evaluate_row(lm, stream, cfg.eval, desc, progress)

    if not files.reference.exists():
        ref = reference_model(model, seed=cfg.model.seed + 1)
        _write_row(files, "reference", evaluate(ref, "eval reference"), {})
        del ref
    if not files.base.exists():
        _write_row(files, "base", evaluate(model, "eval base"), {})
    base = read_json(files.base)

    def encode(rec):
        return encode_example(tok, rec, cfg.model.max_length)

    views = [TaskView(i, t.name, t.train, encode, t.pretrained) for i, t in enumerate(stream.tasks)]
    optimizer = None
    global_step = 0
    trained_before = [i for i in range(start) if not views[i].pretrained]
    for i in range(start):
        if views[i].pretrained:
            strategy.observe_pretrained(views[i])
    if trained_before:
        state = load_checkpoint(files, trained_before[-1], strategy, model)
        global_step = len(trained_before) * cfg.train.steps_per_task if strategy.trains else 0
        if not cfg.train.reset_optimizer and state.get("optimizer") is not None:
            optimizer = adamw(strategy.trainable, cfg.train.weight_decay)
            optimizer.load_state_tensors(optimizer_state_from_torch(state["optimizer"], strategy.trainable))

    for t in range(start, T):
        view = views[t]
        if view.pretrained:
            strategy.observe_pretrained(view)
            atomic_write_json(files.after(t), {**base, "pretrained": True, "train_seconds": 0.0, "tokens": 0,
                                               "updated_elements": 0, "diagnostics": {}})
            continue
        seed_everything(task_seed(seed, t))
        mx.random.seed(task_seed(seed, t))
        strategy.before_task(view, model)
        t0 = time.perf_counter()
        log: list[dict] = []
        if strategy.trains:
            if optimizer is None or cfg.train.reset_optimizer:
                optimizer = adamw(strategy.trainable, cfg.train.weight_decay)
            log = train_task(model, tok, strategy, view, optimizer, cfg.train, task_seed(seed, t), global_step,
                             progress)
            global_step += cfg.train.steps_per_task
        train_seconds = time.perf_counter() - t0
        strategy.after_task(view, model)
        atomic_write_jsonl(files.task_log(t), log)
        diagnostics = strategy.diagnostics()
        save_checkpoint(files, t, strategy, model,
                        {"task": view.name, "task_index": t, "strategy": spec.name, "seed": seed,
                         "backend": "mlx", "diagnostics": diagnostics},
                        optimizer if not cfg.train.reset_optimizer else None)
        row = evaluate(model, f"eval after {view.name}")
        _write_row(files, t, row, {"pretrained": False, "train_seconds": train_seconds,
                                   "tokens": sum(r["tokens"] for r in log),
                                   "updated_elements": sum(r["updated_elements"] for r in log),
                                   "final_loss": log[-1]["loss"] if log else None, "diagnostics": diagnostics})
    finalize(files, stream, T, strategy.trainable_parameters)
    return files.root, status
