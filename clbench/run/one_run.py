"""One run: a strategy through a stream with one seed, evaluated after every task, resumable.

Order of work (each result file written atomically, the row file of a task last):

1. write ``config.json`` and ``provenance.json``; a directory holding a different config is refused;
2. evaluate an untrained model of the same architecture (``reference``, for forward transfer) and the
   base model (``base``, row before the stream);
3. for each task not yet finished: train it (or, for a task the base model learned, take the base
   row), save the adapter checkpoint and the strategy state, evaluate every probe suite, write the row;
4. build the matrices, compute the metrics, concatenate the logs, write ``DONE``.

A killed run restarts at step 3 with the first task that has no row: the adapter and strategy state
of the last finished task are loaded, and every task re-seeds from ``(seed, task index)``, so a resumed
run produces the same numbers as an uninterrupted one.

This order is written once, in :func:`run_one`, for every backend. What depends on the array library
— loading the model, the reference model, the probe view, the optimizer and its saved state, one
task's training, the adapter file — is a :class:`RunOps` object: :class:`TorchOps` here (the default),
``clbench.backends.mlx.runner.MLXOps`` for MLX. So both backends write the same run directory with the
same resume rules, and a change to either is a change to both.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from clbench.config.experiment import ExperimentConfig, StrategySpec, config_dict
from clbench.data.encoding import encode_example
from clbench.data.streams import Stream
from clbench.errors import ConfigError
from clbench.eval.probes import higher_is_better
from clbench.eval.rows import evaluate_row
from clbench.eval.torch_lm import TorchLM
from clbench.modeling.loading import load_causal_lm, pick_device, pick_dtype, reference_model
from clbench.results.breakdown import category_scores, known_suites
from clbench.results.files import (
    SCHEMA_VERSION,
    RunFiles,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_jsonl,
    read_json,
    run_dir,
)
from clbench.results.metrics import summarize
from clbench.results.provenance import provenance
from clbench.run.known_subset import ensure_known_subset
from clbench.train import registry
from clbench.train.loop import make_optimizer, train_task
from clbench.train.strategy import TaskView


def make_strategy(spec: StrategySpec, seed: int, cfg: ExperimentConfig, get=None):
    """Instantiate a grid entry, validating its options (unknown keys name the allowed ones); ``get``
    looks the class up by name (default: the torch registry; the MLX backend passes its own table)."""
    cls = (get or registry.get)(spec.name)
    options = cls.options_from(spec.options, f"strategies[{spec.run_label}].options")
    return cls(options, seed=seed, train=cfg.train)


def task_seed(seed: int, t: int) -> int:
    return int(hashlib.sha256(f"{seed}:{t}".encode()).hexdigest()[:8], 16)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_record(cfg: ExperimentConfig, stream: Stream, spec: StrategySpec, seed: int, base_dir: Path) -> dict:
    """What ``config.json`` stores; two runs with equal records are the same experiment."""
    return {"schema": SCHEMA_VERSION, "experiment": cfg.name, "seed": seed,
            "strategy": {"name": spec.name, "label": spec.run_label, "options": spec.options},
            "stream": {"name": stream.name, "source": stream.source, "fingerprint": stream.fingerprint(),
                       "tasks": [t.name for t in stream.tasks], "pretrained": [t.pretrained for t in stream.tasks],
                       "suites": stream.suite_names, "primary_metric": stream.spec.primary_metric},
            "model": config_dict(cfg.model), "base_model": base_dir.name, "train": config_dict(cfg.train),
            "eval": config_dict(cfg.eval)}


def same_experiment(a: dict, b: dict) -> bool:
    """Whether two ``config.json`` records describe the same experiment."""
    drop = ("eval",)  # evaluation batch size does not change results
    return {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}


def write_row(files: RunFiles, key: int | str, row: dict, extra: dict) -> None:
    """A row of scores (``after_<t>`` for a task index, else ``eval/<key>.json``) and its predictions."""
    pred_dir = files.predictions(key)
    for task, suites in row["items"].items():
        for suite, items in suites.items():
            atomic_write_jsonl(pred_dir / f"{task}.{suite}.jsonl", items)
    path = files.after(key) if isinstance(key, int) else files.root / "eval" / f"{key}.json"
    atomic_write_json(path, {"scores": row["scores"], "seconds": row["seconds"], "n_items": row["n_items"], **extra})


class RunOps:
    """What one run needs from an array library; :func:`run_one` calls nothing else of it.

    One instance per run (it may keep what it chose, e.g. the device, between calls). The checkpoint
    files are written by the runner: the adapter through :meth:`save_adapter`, and
    ``strategy_state.pt`` with ``torch.save`` of the strategy's plain state and :meth:`optimizer_state`,
    so the layout and its readers do not depend on the backend.
    """

    checkpoint_meta: ClassVar[dict] = {}  # extra keys of every checkpoint header (e.g. the backend's name)

    def check_stream(self, stream: Stream) -> None:
        """Raise ``ConfigError`` for a stream this backend cannot evaluate (before anything is written)."""

    def start(self, cfg: ExperimentConfig) -> dict:
        """Set-up before ``config.json`` is written (a bad device is refused then); returns extra
        ``provenance.json`` fields."""
        return {}

    def load(self, cfg: ExperimentConfig, base_dir: Path):
        """``(model, tokenizer)`` of the base model."""
        raise NotImplementedError

    def make_strategy(self, spec: StrategySpec, seed: int, cfg: ExperimentConfig):
        raise NotImplementedError

    def seed(self, seed: int) -> None:
        """Seed every generator the run draws from (before ``prepare_model`` and before each task)."""
        seed_everything(seed)

    def place(self, model):
        """The prepared model where it trains (a device)."""
        return model

    def reference(self, cfg: ExperimentConfig, base_dir: Path, model):
        """An untrained model of the base model's architecture."""
        raise NotImplementedError

    def view(self, model, tokenizer, batch_size: int):
        """The probe-facing view of ``model`` (a context manager; ``clbench.eval.lm_view.LMView``)."""
        raise NotImplementedError

    def make_optimizer(self, strategy, model, cfg: ExperimentConfig):
        raise NotImplementedError

    def optimizer_state(self, optimizer) -> dict:
        """The optimizer's state as ``torch.save``-able data."""
        raise NotImplementedError

    def load_optimizer_state(self, optimizer, state: dict, strategy) -> None:
        """Inverse of :meth:`optimizer_state`."""
        raise NotImplementedError

    def train_task(self, model, tokenizer, strategy, task: TaskView, optimizer, cfg: ExperimentConfig, seed: int,
                   global_step: int, progress: bool) -> list[dict]:
        """``cfg.train.steps_per_task`` optimizer steps on ``task``; the per-step log records."""
        raise NotImplementedError

    def save_adapter(self, path: Path, tensors: dict, metadata: dict[str, str]) -> None:
        """Write ``tensors`` (the strategy's checkpoint tensors) as safetensors, atomically."""
        raise NotImplementedError

    def load_adapter(self, path: Path) -> dict:
        raise NotImplementedError


class TorchOps(RunOps):
    """The torch backend: transformers + peft models, ``clbench.train.loop``, ``clbench.eval.torch_lm.TorchLM``."""

    def load(self, cfg, base_dir):
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.device = pick_device(cfg.model.device)
        self.dtype = pick_dtype(cfg.model.dtype, self.device)
        return load_causal_lm(base_dir, cfg.model.device, cfg.model.dtype, cfg.model.trust_remote_code)

    def make_strategy(self, spec, seed, cfg):
        return make_strategy(spec, seed, cfg)

    def place(self, model):
        return model.to(self.device)

    def reference(self, cfg, base_dir, model):
        return reference_model(base_dir, seed=cfg.model.seed + 1, device=self.device, dtype=self.dtype,
                               trust_remote_code=cfg.model.trust_remote_code)

    def view(self, model, tokenizer, batch_size):
        return TorchLM(model, tokenizer, batch_size=batch_size)

    def make_optimizer(self, strategy, model, cfg):
        return make_optimizer(strategy, model, cfg.train)

    def optimizer_state(self, optimizer):
        return optimizer.state_dict()

    def load_optimizer_state(self, optimizer, state, strategy):
        optimizer.load_state_dict(state)

    def train_task(self, model, tokenizer, strategy, task, optimizer, cfg, seed, global_step, progress):
        return train_task(model, tokenizer, strategy, task, optimizer, cfg.train, cfg.model.max_length, seed,
                          global_step, progress)

    def save_adapter(self, path, tensors, metadata):
        from safetensors.torch import save

        tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        atomic_write_bytes(path, save(tensors, metadata=metadata))

    def load_adapter(self, path):
        from safetensors.torch import load_file

        return load_file(path)


def save_checkpoint(files: RunFiles, t: int, strategy, model, meta: dict, ops: RunOps, optimizer=None) -> None:
    """``checkpoints/task_<t>/``: the adapter (metadata in its header) and the strategy (+ optimizer) state."""
    ckpt = files.checkpoint(t)
    metadata = {"clbench": json.dumps({**meta, **strategy.checkpoint_metadata()}, sort_keys=True, default=str)}
    ops.save_adapter(ckpt / "adapter.safetensors", strategy.checkpoint_tensors(model), metadata)
    buf = io.BytesIO()
    torch.save({"strategy": strategy.state_dict(),
                "optimizer": ops.optimizer_state(optimizer) if optimizer is not None else None}, buf)
    atomic_write_bytes(ckpt / "strategy_state.pt", buf.getvalue())


def load_checkpoint(files: RunFiles, t: int, strategy, model, ops: RunOps) -> dict:
    """Restore the adapter and the strategy state of task ``t``; returns the stored state (optimizer too)."""
    ckpt = files.checkpoint(t)
    strategy.load_checkpoint_tensors(model, ops.load_adapter(ckpt / "adapter.safetensors"))
    state = torch.load(ckpt / "strategy_state.pt", weights_only=True)
    strategy.load_state_dict(state["strategy"])
    return state


def matrices(stream: Stream, rows: list[dict], base: dict, reference: dict) -> dict:
    """``{suite: {"R": T×T, "base": [..], "reference": [..], "kind", "higher_is_better"}}``."""
    out = {}
    for suite in stream.suite_names:
        first = next(p for t in stream.tasks for p in t.probes if p.name == suite)

        def pick(r, suite=suite):
            return [r["scores"].get(t.name, {}).get(suite) for t in stream.tasks]

        out[suite] = {"kind": first.kind, "higher_is_better": higher_is_better(first),
                      "R": [pick(r) for r in rows], "base": pick(base), "reference": pick(reference)}
    return out


def run_one(cfg: ExperimentConfig, stream: Stream, spec: StrategySpec, seed: int, base_dir: Path,
            progress: bool = True, ops: RunOps | None = None) -> tuple[Path, str]:
    """Run (or finish, or skip) one run with ``ops`` (default: torch); returns its directory and
    ``"done"``/``"skipped"``/``"resumed"``."""
    ops = ops if ops is not None else TorchOps()
    ops.check_stream(stream)
    files = RunFiles(run_dir(cfg, stream.name, spec, seed))
    record = run_record(cfg, stream, spec, seed, base_dir)
    if files.config.exists():
        if not same_experiment(read_json(files.config), record):
            raise ConfigError(str(files.config), "this run directory holds results of a different config; "
                              "choose another experiment name or delete the directory")
        if files.done.exists():
            return files.root, "skipped"
    extra_provenance = ops.start(cfg)
    atomic_write_json(files.config, record)
    if not files.provenance.exists():
        atomic_write_json(files.provenance, {**provenance(), **extra_provenance})

    T = len(stream.tasks)
    start = files.finished_tasks(T)
    status = "resumed" if start > 0 else "done"
    model, tok = ops.load(cfg, base_dir)
    if cfg.model.use_chat_template:  # the same tokenizer and template on every backend
        from clbench.modeling.chat import chat_stream

        stream = chat_stream(stream, tok)
    ensure_known_subset(files, cfg, stream, base_dir, lambda: ops.view(model, tok, batch_size=cfg.eval.batch_size),
                        progress)  # on the model as loaded, before any strategy touches it
    strategy = ops.make_strategy(spec, seed, cfg)
    ops.seed(seed)
    model = ops.place(strategy.prepare_model(model))
    strategy.mark_trainable(model)

    def evaluate(m, desc: str) -> dict:
        with ops.view(m, tok, batch_size=cfg.eval.batch_size) as lm:
            return evaluate_row(lm, stream, cfg.eval, desc, progress)

    if not files.reference.exists():
        ref = ops.reference(cfg, base_dir, model)
        write_row(files, "reference", evaluate(ref, "eval reference"), {})
        del ref
    if not files.base.exists():
        write_row(files, "base", evaluate(model, "eval base"), {})
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
        state = load_checkpoint(files, trained_before[-1], strategy, model, ops)
        global_step = len(trained_before) * cfg.train.steps_per_task if strategy.trains else 0
        if not cfg.train.reset_optimizer and state.get("optimizer") is not None:
            optimizer = ops.make_optimizer(strategy, model, cfg)
            ops.load_optimizer_state(optimizer, state["optimizer"], strategy)

    for t in range(start, T):
        view = views[t]
        if view.pretrained:
            strategy.observe_pretrained(view)
            atomic_write_json(files.after(t), {**base, "pretrained": True, "train_seconds": 0.0, "tokens": 0,
                                               "updated_elements": 0, "diagnostics": {}})
            continue
        ops.seed(task_seed(seed, t))
        strategy.before_task(view, model)
        t0 = time.perf_counter()
        log: list[dict] = []
        if strategy.trains:
            if optimizer is None or cfg.train.reset_optimizer:
                optimizer = ops.make_optimizer(strategy, model, cfg)
            log = ops.train_task(model, tok, strategy, view, optimizer, cfg, task_seed(seed, t), global_step,
                                 progress)
            global_step += cfg.train.steps_per_task
        train_seconds = time.perf_counter() - t0
        strategy.after_task(view, model)
        atomic_write_jsonl(files.task_log(t), log)
        diagnostics = strategy.diagnostics()
        save_checkpoint(files, t, strategy, model,
                        {"task": view.name, "task_index": t, "strategy": spec.name, "seed": seed,
                         **ops.checkpoint_meta, "diagnostics": diagnostics},
                        ops, optimizer if not cfg.train.reset_optimizer else None)
        row = evaluate(model, f"eval after {view.name}")
        write_row(files, t, row, {"pretrained": False, "train_seconds": train_seconds,
                                  "tokens": sum(r["tokens"] for r in log),
                                  "updated_elements": sum(r["updated_elements"] for r in log),
                                  "final_loss": log[-1]["loss"] if log else None, "diagnostics": diagnostics})
    finalize(files, stream, T, strategy.trainable_parameters)
    return files.root, status


def finalize(files: RunFiles, stream: Stream, T: int, trainable_parameters: int) -> None:
    """Matrices, metrics and the concatenated log from the stored rows (never from memory).

    The only number not read from disk is the count of trainable parameter elements.
    """
    rows = [read_json(files.after(t)) for t in range(T)]
    mats = matrices(stream, rows, read_json(files.base), read_json(files.reference))
    mats.update(known_suites(files, stream, rows, mats))  # qa_known, ...: items the base model knew
    general = [i for i, t in enumerate(stream.tasks) if t.pretrained]
    metrics = {s: summarize(m["R"], m["reference"], m["base"], general, m["higher_is_better"]) for s, m in mats.items()}
    logs = [rec for t in range(T) if files.task_log(t).exists()
            for rec in map(json.loads, files.task_log(t).read_text().splitlines())]
    cost = {"train_seconds": sum(r.get("train_seconds", 0.0) for r in rows),
            "eval_seconds": sum(r["seconds"] for r in rows if not r.get("pretrained")),
            "tokens": sum(r.get("tokens", 0) for r in rows),
            "optimizer_steps": len(logs),
            "updated_elements": sum(r.get("updated_elements", 0) for r in rows),
            "trainable_parameters": trainable_parameters}
    atomic_write_json(files.matrix, {"tasks": [t.name for t in stream.tasks], "suites": mats})
    atomic_write_json(files.metrics, {"primary_metric": stream.spec.primary_metric, "suites": metrics, "cost": cost,
                                      "final_loss": {stream.tasks[t].name: rows[t].get("final_loss")
                                                     for t in range(T) if not rows[t].get("pretrained")},
                                      "categories": category_scores(files, stream, rows)})
    atomic_write_jsonl(files.train_log, logs)
    atomic_write_bytes(files.done, b"")
