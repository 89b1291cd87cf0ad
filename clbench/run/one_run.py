"""One run: a strategy through a stream with one seed, evaluated after every task, resumable.

A run arrives as a :class:`clbench.run.plan.RunSpec`: its row's config, its stream (in its task order,
with its probe split), strategy, seed, base model and files, all worked out when the grid was planned.
Order of work (each result file written atomically, the row file of a task last):

0. take the run's lock (``clbench.results.lock``: another process writing it → skip, or wait), remove
   temporary files a killed write left behind; a directory holding a different config is refused, a
   finished one skipped (:func:`run_one`; a finished run is only read, without the lock);
1. load the model (one that does not load leaves nothing behind), write ``config.json`` and
   ``provenance.json`` (``_Run``, set-up);
2. evaluate an untrained model of the same architecture (``reference``, for forward transfer) and the
   base model as loaded (``base``, row before the stream) — or copy both from the cache, where the first
   run of a model and stream put them (``clbench.run.base_scores``; ``_Run.fixed_rows``); then build the
   strategy and set it on the model (``_Run.set_strategy``), restoring the last finished task's state
   after a kill (``_Run.restore``);
3. for each task not yet finished: train it (or, for a task the base model learned, take the base
   row), save the adapter checkpoint and the strategy state, evaluate every probe suite, write the row
   (``_Run.task``);
4. build the matrices, compute the metrics (with the loss check of ``clbench.results.loss_check``),
   concatenate the logs, write ``DONE`` (:func:`finalize`); release the lock.

A killed run restarts at step 3 with the first task that has no row: the adapter and strategy state
of the last finished task are loaded, and every task re-seeds from ``(seed, task index)``, so a resumed
run produces the same numbers as an uninterrupted one.

While this process writes the run, ``progress.json`` says where it is (task, step, what is left) for a
parent that runs it in another process (``clbench.run.grid_progress``); it is removed before step 4, so a
finished run directory is the same however it ran.

This order is written once, in :func:`run_one` and :func:`_write_run`, for every backend. What depends on the array library
— loading the model, the reference model, the probe view, the optimizer and its saved state, the
adapter file — is the run's backend (``clbench.backends.base.Backend``), and one task's training is
``clbench.train.loop.train_task`` on every backend. So both backends write the same run directory with
the same resume rules, and a change to either is a change to both.
"""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch

from clbench.backends import get_backend
from clbench.config.experiment import ModelConfig, TrainConfig, config_dict, model_record
from clbench.data.encoding import encode_example
from clbench.data.streams import Stream
from clbench.errors import ConfigError
from clbench.eval.kl import KLFromBase, kl_texts
from clbench.eval.probes import higher_is_better
from clbench.eval.rows import evaluate_row
from clbench.faults import fault_point
from clbench.results.atomic import remove_leftovers
from clbench.results.breakdown import category_scores, known_suites
from clbench.results.files import (
    SCHEMA_VERSION,
    RunFiles,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_jsonl,
    read_json,
)
from clbench.results.integrity import CHECKSUMS, folder_sums, verify_checksums
from clbench.results.lock import LOCK_NAME, describe, hold, holder
from clbench.results.loss_check import loss_check
from clbench.results.metrics import METRICS_VERSION, summarize
from clbench.results.provenance import provenance
from clbench.results.tensorboard import open_curves
from clbench.run.base_scores import ensure_known_subset, fixed_row
from clbench.run.checks import TruncationCount, readable_checkpoint
from clbench.run.grid_progress import RunProgress
from clbench.run.plan import GridEntry, RunSpec, stored_options_match
from clbench.seeding import task_seed
from clbench.train.loop import train_task
from clbench.train.types import TaskView


class Scored(NamedTuple):
    """A row of scores and, when asked, the model's KL from the base model (``clbench.eval.kl``)."""

    row: dict
    kl: dict | None = None


def run_record(spec: RunSpec) -> dict:
    """What ``config.json`` stores (the strategy's options resolved, defaults included); two runs with
    equal records are the same experiment."""
    cfg, stream, entry = spec.cfg, spec.stream, spec.entry
    strategy = {"name": entry.spec.name, "label": entry.spec.run_label, "options": entry.options_dict}
    if entry.plugins:
        strategy["with"] = entry.plugins_list
    return {"schema": SCHEMA_VERSION, "experiment": cfg.name, "seed": spec.seed, "strategy": strategy,
            "stream": {"name": stream.name, "source": stream.source, "fingerprint": stream.file_fingerprint,
                       "tasks": [t.name for t in stream.tasks], "pretrained": stream.pretrained_flags,
                       "suites": stream.suite_names, "primary_metric": stream.spec.primary_metric},
            "model": model_record(cfg.model), "base_model": spec.base_dir.name, "train": config_dict(cfg.train),
            "eval": config_dict(cfg.eval),
            **{k: v for k, v in stream.derived.items() if k in ("order", "probe_split")}}


def same_experiment(stored: dict, record: dict, entry: GridEntry) -> bool:
    """Whether a stored ``config.json`` and a new record describe the same experiment. Results written
    before options were stored resolved hold the user's raw options: those are resolved to compare."""
    drop = ("eval", "strategy")  # evaluation batch size does not change results; options compared below
    # a field missing from an older record (train.optimizer, model.autocast, ...) had its default value then
    defaults = {"train": config_dict(TrainConfig()), "model": config_dict(ModelConfig())}

    def norm(r):
        out = {k: ({**defaults[k], **v} if k in defaults else v) for k, v in r.items() if k not in drop}
        return {**out, "model": model_record(out.get("model", defaults["model"]))}
    same = norm(stored) == norm(record)
    s, r = stored.get("strategy", {}), record["strategy"]
    return (same and (s.get("name"), s.get("label"), s.get("with")) == (r["name"], r["label"], r.get("with"))
            and stored_options_match(entry, s.get("options", {})))


def write_row(files: RunFiles, key: int | str, row: dict, extra: dict) -> None:
    """A row of scores (``after_<t>`` for a task index, else ``eval/<key>.json``) and its predictions."""
    for task, suites in row["items"].items():
        for suite, items in suites.items():
            atomic_write_jsonl(files.prediction_file(key, task, suite), items)
    atomic_write_json(files.row(key), {"scores": row["scores"], "seconds": row["seconds"], "n_items": row["n_items"], **extra})


def copied_row(files: RunFiles, key: str, stream: Stream) -> dict:
    """The row already written under ``eval/<key>.json``, with its predictions, as :func:`write_row` takes it
    (``seconds`` 0: nothing was scored)."""
    stored = read_json(files.row(key))
    items = {t.name: {s.name: [json.loads(line) for line in
                               files.prediction_file(key, t.name, s.name).read_text().splitlines()]
                      for s in t.probes} for t in stream.tasks}
    return {"scores": stored["scores"], "items": items, "seconds": 0.0, "n_items": stored["n_items"]}


def save_checkpoint(files: RunFiles, t: int, strategy, model, meta: dict, ops, optimizer=None) -> None:
    """``checkpoints/task_<t>/``: the adapter (metadata in its header) and the strategy (+ optimizer) state."""
    ckpt = files.checkpoint(t)
    metadata = {"clbench": json.dumps({**meta, **strategy.checkpoint_metadata()}, sort_keys=True, default=str)}
    ops.save_adapter(ckpt / "adapter.safetensors", strategy.checkpoint_tensors(model), metadata)
    buf = io.BytesIO()
    torch.save({"strategy": strategy.state_dict(),
                "optimizer": ops.optimizer_state(optimizer) if optimizer is not None else None}, buf)
    atomic_write_bytes(ckpt / "strategy_state.pt", buf.getvalue())
    atomic_write_json(ckpt / CHECKSUMS, folder_sums(ckpt, skip=(CHECKSUMS,)))  # verified before a resume loads them


def load_checkpoint(files: RunFiles, t: int, strategy, model, ops) -> dict:
    """Restore the adapter and the strategy state of task ``t``; returns the stored state (optimizer too)."""
    ckpt = files.checkpoint(t)
    verify_checksums(ckpt)
    with readable_checkpoint(ckpt, t):
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


def run_one(spec: RunSpec, progress: bool = True, wait: bool = False) -> tuple[Path, str]:
    """Run (or finish, or skip) one run of the grid (``clbench.run.plan.RunSpec``) on its backend; returns
    its directory and ``"done"``/``"skipped"``/``"resumed"``, or ``"locked"`` when another process is
    writing it (with ``wait``: once that process is done). Temporary files of killed writes are removed
    first."""
    files, record = spec.files, run_record(spec)
    if files.done.exists() and files.config.exists():
        # finished: only read (skipped, or refused for another config), so no lock; a read-only folder works
        _written_before(spec, record)
        return files.root, "skipped"

    def waiting(info):
        print(f"clbench: waiting for {describe(info)}, which is writing {files.root}", file=sys.stderr)

    with hold(files.root, wait=wait, on_wait=waiting) as held:
        if not held:
            print(f"clbench: skipped {files.root}: {describe(holder(files.root / LOCK_NAME, wait=2.0))} is writing "
                  "it (clbench run --wait waits for it)", file=sys.stderr)
            return files.root, "locked"
        remove_leftovers(files.root)
        if _written_before(spec, record) and files.done.exists():  # finished while this process waited for the lock
            return files.root, "skipped"
        return files.root, _write_run(spec, record, progress)


def _written_before(spec: RunSpec, record: dict) -> bool:
    """Whether the run's directory holds its ``config.json`` already (a run begun or finished before); the
    ``config.json`` of a different experiment is refused."""
    if not spec.files.config.exists():
        return False
    if not same_experiment(read_json(spec.files.config), record, spec.entry):
        raise ConfigError(str(spec.files.config), "this run directory holds results of a different config; "
                          "choose another experiment name or delete the directory")
    return True


def _write_run(spec: RunSpec, record: dict, progress: bool) -> str:
    """Steps 1-4 of the module docstring, once this process holds the run's lock."""
    run = _Run(spec, record, progress)  # 1. the model loaded, config.json and provenance.json written
    try:
        run.fixed_rows()  # 2. the reference and base rows
        run.set_strategy()  # the run's strategy, on the model
        start = run.restore()  # resumed after the last finished task
        strategy = run.strategy
        run.live.begin(start, strategy.trains, evaluates=strategy.trains or not strategy.scores_as_base)
        for t in range(start, len(run.stream.tasks)):
            run.task(t)  # 3. train, checkpoint, evaluate, write the row
        run.curves.close()
    finally:
        run.live.close()  # progress.json: only while the run is written (a kill leaves it, the next attempt rewrites it)
    finalize(spec.files, run.stream, len(run.stream.tasks), run.strategy.trainable_parameters)  # 4.
    return "resumed" if start > 0 else "done"


class _Run:
    """One run while this process writes it: what set-up loaded, and what one task hands the next (the
    strategy, the optimizer, the global step)."""

    def __init__(self, spec: RunSpec, record: dict, progress: bool):
        """Step 1: start the backend, load the model, write ``config.json`` and ``provenance.json``."""
        cfg, files = spec.cfg, spec.files
        self.spec, self.cfg, self.files, self.progress = spec, cfg, files, progress
        self.ops = get_backend(cfg.model.backend)
        extra_provenance = self.ops.start(cfg)
        self.model, self.tok = self.ops.load(cfg, spec.base_dir)  # a model that does not load leaves no run directory
        atomic_write_json(files.config, record)
        if not files.provenance.exists():
            atomic_write_json(files.provenance, {**provenance(), **extra_provenance,
                                                 "allow_code": spec.stream.code_allowed,
                                                 "data_sources": spec.stream.data_sources})
        self.stream = spec.stream
        if cfg.model.use_chat_template:  # the same tokenizer and template on every backend
            from clbench.modeling.chat import chat_stream

            self.stream = chat_stream(self.stream, self.tok)
        ensure_known_subset(files, cfg, self.stream, spec.base_dir, lambda: self.ops.view(
            self.model, self.tok, batch_size=cfg.eval.batch_size), progress, self.ops.numerics)  # before any strategy
        # the base model's next-token distributions on held-out general text: each trained task's row records
        # the KL of the model from them (clbench.eval.kl), a diagnostic of how far the model moved
        with self.ops.evaluation_weights(self.model), self.ops.view(self.model, self.tok,
                                                                    batch_size=cfg.eval.batch_size) as lm:
            self.kl = KLFromBase(kl_texts(self.stream), lm)
        self.curves = open_curves(cfg.log, files.root, record)  # TensorBoard (and W&B if asked)
        # where the run is, for a parent that runs it in another process (clbench.run.grid_progress)
        self.live = RunProgress(files.progress, self.stream.pretrained_flags, cfg.train.steps_per_task)

    def evaluate(self, model, desc: str, wrap=lambda view: view, keep=(), kl: bool = False) -> Scored:
        """A row: every probe suite of the stream on ``model`` (through the strategy's ``wrap``); with ``kl``,
        also the model's KL from the base model (``clbench.eval.kl``), on the same evaluation weights
        through a plain view: the trained weights, never a test-time-learning ``wrap``."""
        ops, batch_size = self.ops, self.cfg.eval.batch_size
        divergence = None
        with ops.evaluation_weights(model):
            with wrap(ops.view(model, self.tok, batch_size=batch_size, keep=keep)) as lm:
                row = evaluate_row(lm, self.stream, self.cfg.eval, desc, self.progress)
            if kl:
                with ops.view(model, self.tok, batch_size=batch_size, keep=keep) as lm:
                    divergence = self.kl(lm)
        return Scored(row, divergence)

    def fixed_rows(self) -> None:
        """Step 2: the rows that are the same for every strategy and seed — the reference (untrained) model's
        and the base model's — from the cache, or computed on the model as loaded."""
        cfg, files, ops, base_dir = self.cfg, self.files, self.ops, self.spec.base_dir
        for which, make in (("reference", lambda: ops.reference(cfg, base_dir, self.model)), ("base", lambda: self.model)):
            if not files.row(which).exists():
                row = fixed_row(cfg, self.stream, base_dir, which,
                                lambda make=make, which=which: self.evaluate(make(), f"eval {which}").row,
                                numerics=ops.numerics)
                write_row(files, which, row, {"cache_file": row["cache_file"]})
                if which == "base":
                    self.curves.probes(row["scores"], 0)
        self.base = read_json(files.base)

    def set_strategy(self) -> None:
        """Build the run's strategy (its one instance) and set it on the model (adapters, what trains); the
        tasks as it sees them (training records only, each encoder counting what it cuts)."""
        cfg, ops = self.cfg, self.ops
        self.strategy = strategy = self.spec.entry.make(self.spec.seed, cfg, ops)
        ops.seed(self.spec.seed)
        self.model = ops.place(strategy.prepare_model(self.model))
        strategy.mark_trainable(self.model)
        self.cut = TruncationCount(lambda rec: encode_example(self.tok, rec, cfg.model.max_length), cfg.model.max_length)
        self.views = [TaskView(i, t.name, t.train, self.cut.encoder(i), t.pretrained)
                      for i, t in enumerate(self.stream.tasks)]
        self.optimizer, self.global_step = None, 0

    def restore(self) -> int:
        """After a kill: what the finished tasks left — the pretrained tasks observed again, the adapter and
        strategy state (and the optimizer's, if it is kept across tasks) of the last trained one loaded.
        Returns the first task to run."""
        cfg, ops, strategy = self.cfg, self.ops, self.strategy
        start = self.files.finished_tasks(len(self.stream.tasks))
        for view in self.views[:start]:
            if view.pretrained:
                strategy.observe_pretrained(view)
        trained_before = [t for t in self.stream.trained_indices if t < start]
        if trained_before:
            state = load_checkpoint(self.files, trained_before[-1], strategy, self.model, ops)
            self.global_step = len(trained_before) * cfg.train.steps_per_task if strategy.trains else 0
            if not cfg.train.reset_optimizer and state.get("optimizer") is not None:
                self.optimizer = ops.make_optimizer(strategy, self.model, cfg.train)
                ops.load_optimizer_state(self.optimizer, state["optimizer"], strategy)
        return start

    def step_ended(self, rec: dict) -> None:
        """A training step's log record, as the step ends: its curve scalars and the run's progress."""
        self.curves.step(rec)
        self.live.step_done(rec["step"])

    def frozen_cast(self):
        """Frozen weights in the compute dtype for one phase (mixed precision), not what the strategy trains."""
        return self.ops.frozen_cast(self.model, self.strategy.trainable.values())

    def task(self, t: int) -> None:
        """Step 3 for task ``t``: train it (a task the base model learned takes the base row), save the
        checkpoint, evaluate every probe suite, write the row (last: it marks the task finished)."""
        files, strategy, view = self.files, self.strategy, self.views[t]
        if view.pretrained:
            strategy.observe_pretrained(view)
            atomic_write_json(files.after(t), {**self.base, "pretrained": True, "train_seconds": 0.0, "tokens": 0,
                                               "updated_elements": 0, "diagnostics": {}})
            self.live.task_done(t, 0.0, 0, None)
            return
        log, train_seconds = self.train(view)
        atomic_write_jsonl(files.task_log(t), log)
        diagnostics = strategy.diagnostics()
        kept = self.optimizer if not self.cfg.train.reset_optimizer else None
        save_checkpoint(files, t, strategy, self.model,
                        {"task": view.name, "task_index": t, "strategy": self.spec.entry.spec.name,
                         "seed": self.spec.seed, **self.ops.checkpoint_meta, "diagnostics": diagnostics},
                        self.ops, kept)
        fault_point(f"after_checkpoint:{t}")
        self.live.evaluating(t)
        row, extra = self.scored_after(view)
        write_row(files, t, row, {**extra, "pretrained": False, "train_seconds": train_seconds,
                                  "tokens": sum(r["tokens"] for r in log),
                                  "updated_elements": sum(r["updated_elements"] for r in log),
                                  "final_loss": log[-1]["loss"] if log else None, "diagnostics": diagnostics,
                                  "truncated_records": self.cut.count(t, view.name)})
        self.live.task_done(t, train_seconds, len(log), None if "copied_from" in extra else row["seconds"])
        self.curves.task(log, row["scores"], diagnostics, self.global_step if strategy.trains else t)

    def scored_after(self, view: TaskView) -> tuple[dict, dict]:
        """The row after training ``view`` and what its file records besides the scores (``kl``, and
        ``copied_from`` for a strategy that scores as the base model and did not train: the base row)."""
        strategy = self.strategy
        if strategy.scores_as_base and not strategy.trains:  # it evaluates the base model, unchanged: the base row
            row, kl, extra = copied_row(self.files, "base", self.stream), self.kl.unchanged(), {"copied_from": "base"}
        else:
            (row, kl), extra = self.evaluate(self.model, f"eval after {view.name}", strategy.probe_view,
                                             strategy.trainable.values(), kl=True), {}
        return row, extra if kl is None else {**extra, "kl": kl}

    def train(self, view: TaskView) -> tuple[list[dict], float]:
        """The strategy's hooks around the task's optimizer steps; returns the step log and the seconds."""
        cfg, ops, strategy, seed = self.cfg, self.ops, self.strategy, task_seed(self.spec.seed, view.index)
        ops.seed(seed)
        with ops.training_compute():  # the hooks' own passes (a Fisher, an importance estimate) computed as training's
            strategy.before_task(view, self.model)
        t0 = time.perf_counter()
        log: list[dict] = []
        if strategy.trains:
            if self.optimizer is None or cfg.train.reset_optimizer:
                self.optimizer = ops.make_optimizer(strategy, self.model, cfg.train)
            self.live.training(view.index)
            with self.frozen_cast():
                log = train_task(self.model, self.tok, strategy, view, self.optimizer, cfg.train, seed,
                                 self.global_step, self.progress, on_step=self.step_ended)
            self.global_step += cfg.train.steps_per_task
        train_seconds = time.perf_counter() - t0
        with ops.training_compute(), self.frozen_cast():
            strategy.after_task(view, self.model)
        return log, train_seconds


def finalize(files: RunFiles, stream: Stream, T: int, trainable_parameters: int) -> None:
    """Matrices, metrics and the concatenated log from the stored rows (never from memory).

    The only number not read from disk is the count of trainable parameter elements.
    """
    rows = [read_json(files.after(t)) for t in range(T)]
    mats = matrices(stream, rows, read_json(files.base), read_json(files.reference))
    mats.update(known_suites(files, stream, mats))  # qa_known, ...: items the base model knew
    general, trained = stream.pretrained_indices, stream.trained_indices
    metrics = {s: summarize(m["R"], m["reference"], m["base"], general, m["higher_is_better"]) for s, m in mats.items()}
    logs = [rec for t in range(T) if files.task_log(t).exists()
            for rec in map(json.loads, files.task_log(t).read_text().splitlines())]
    cost = {"train_seconds": sum(r.get("train_seconds", 0.0) for r in rows),
            "eval_seconds": sum(rows[t]["seconds"] for t in trained),
            "tokens": sum(r.get("tokens", 0) for r in rows),
            "optimizer_steps": len(logs),
            "updated_elements": sum(r.get("updated_elements", 0) for r in rows),
            "trainable_parameters": trainable_parameters}
    order = {"order": stream.derived["order"]} if "order" in stream.derived else {}  # for orders.reindex
    atomic_write_json(files.matrix, {"tasks": [t.name for t in stream.tasks], "suites": mats, **order})
    atomic_write_json(files.metrics, {"metrics_version": METRICS_VERSION, "primary_metric": stream.spec.primary_metric,
                                      "suites": metrics, "cost": cost,
                                      "final_loss": {stream.tasks[t].name: rows[t].get("final_loss")
                                                     for t in trained},
                                      "loss_check": loss_check(logs, [t.name for t in stream.tasks]),
                                      "truncated_records": {stream.tasks[t].name: rows[t].get("truncated_records", 0)
                                                            for t in trained},
                                      "categories": category_scores(files, stream)})
    atomic_write_jsonl(files.train_log, logs)
    atomic_write_bytes(files.done, b"")
