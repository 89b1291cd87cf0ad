"""One run: a strategy through a stream with one seed, evaluated after every task, resumable.

Order of work (each result file written atomically, the row file of a task last):

0. take the run's lock (``clbench.run.lock``: another process writing it → skip, or wait), remove
   temporary files a killed write left behind;
1. load the model (one that does not load leaves nothing behind), write ``config.json`` and
   ``provenance.json``; a directory holding a different config is refused;
2. evaluate an untrained model of the same architecture (``reference``, for forward transfer) and the
   base model as loaded (``base``, row before the stream) — or copy both from the cache, where the first
   run of a model and stream put them (``clbench.run.fixed_rows``);
3. for each task not yet finished: train it (or, for a task the base model learned, take the base
   row), save the adapter checkpoint and the strategy state, evaluate every probe suite, write the row;
4. build the matrices, compute the metrics (with the loss check of ``clbench.results.loss_check``),
   concatenate the logs, write ``DONE``; release the lock.

A killed run restarts at step 3 with the first task that has no row: the adapter and strategy state
of the last finished task are loaded, and every task re-seeds from ``(seed, task index)``, so a resumed
run produces the same numbers as an uninterrupted one.

This order is written once, in :func:`run_one`, for every backend. What depends on the array library
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

import torch

from clbench.backends import get_backend
from clbench.config.experiment import ExperimentConfig, ModelConfig, TrainConfig, config_dict, model_record
from clbench.data.encoding import encode_example
from clbench.data.streams import Stream
from clbench.errors import ConfigError
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
    run_dir,
)
from clbench.results.loss_check import loss_check
from clbench.results.metrics import METRICS_VERSION, summarize
from clbench.results.provenance import provenance
from clbench.results.tensorboard import open_curves
from clbench.run.checks import TruncationCount, readable_checkpoint
from clbench.run.fixed_rows import fixed_row
from clbench.run.known_subset import ensure_known_subset
from clbench.run.lock import LOCK_NAME, describe, hold, holder
from clbench.run.plan import GridEntry, resolve_entry, stored_options_match
from clbench.run.seeding import task_seed
from clbench.train.loop import train_task
from clbench.train.types import RunPlan, TaskView


def run_record(cfg: ExperimentConfig, stream: Stream, entry: GridEntry, seed: int, base_dir: Path) -> dict:
    """What ``config.json`` stores (the strategy's options resolved, defaults included); two runs with
    equal records are the same experiment."""
    strategy = {"name": entry.spec.name, "label": entry.spec.run_label, "options": entry.options_dict}
    if entry.plugins:
        strategy["with"] = entry.plugins_list
    return {"schema": SCHEMA_VERSION, "experiment": cfg.name, "seed": seed, "strategy": strategy,
            "stream": {"name": stream.name, "source": stream.source, "fingerprint": stream.file_fingerprint,
                       "tasks": [t.name for t in stream.tasks], "pretrained": [t.pretrained for t in stream.tasks],
                       "suites": stream.suite_names, "primary_metric": stream.spec.primary_metric},
            "model": model_record(cfg.model), "base_model": base_dir.name, "train": config_dict(cfg.train),
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
    path = files.after(key) if isinstance(key, int) else files.root / "eval" / f"{key}.json"
    atomic_write_json(path, {"scores": row["scores"], "seconds": row["seconds"], "n_items": row["n_items"], **extra})


def copied_row(files: RunFiles, key: str, stream: Stream) -> dict:
    """The row already written under ``eval/<key>.json``, with its predictions, as :func:`write_row` takes it
    (``seconds`` 0: nothing was scored)."""
    stored = read_json(files.root / "eval" / f"{key}.json")
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


def load_checkpoint(files: RunFiles, t: int, strategy, model, ops) -> dict:
    """Restore the adapter and the strategy state of task ``t``; returns the stored state (optimizer too)."""
    ckpt = files.checkpoint(t)
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


def run_one(cfg: ExperimentConfig, stream: Stream, entry: GridEntry, seed: int, base_dir: Path,
            progress: bool = True, wait: bool = False) -> tuple[Path, str]:
    """Run (or finish, or skip) one run of a planned grid entry (``clbench.run.plan``) on
    ``cfg.model.backend``; returns its directory and ``"done"``/``"skipped"``/``"resumed"``, or
    ``"locked"`` when another process is writing it (with ``wait``: once that process is done).
    Temporary files of killed writes are removed first."""
    if not isinstance(entry, GridEntry):  # a bare StrategySpec: resolve (and validate) it here
        entry = resolve_entry(entry, cfg)
    root = run_dir(cfg, stream.name, entry.spec, seed)
    if (root / "DONE").exists() and (root / "config.json").exists():
        # finished: only read (skipped, or refused for another config), so no lock; a read-only folder works
        return _run_or_skip(cfg, stream, entry, seed, base_dir, progress)

    def waiting(info):
        print(f"clbench: waiting for {describe(info)}, which is writing {root}", file=sys.stderr)

    with hold(root, wait=wait, on_wait=waiting) as held:
        if not held:
            print(f"clbench: skipped {root}: {describe(holder(root / LOCK_NAME, wait=2.0))} is writing it "
                  "(clbench run --wait waits for it)", file=sys.stderr)
            return root, "locked"
        remove_leftovers(root)
        return _run_or_skip(cfg, stream, entry, seed, base_dir, progress)


def _run_or_skip(cfg: ExperimentConfig, stream: Stream, entry: GridEntry, seed: int, base_dir: Path,
                 progress: bool) -> tuple[Path, str]:
    """The work of :func:`run_one` once it may write (it holds the lock, or the run is finished)."""
    cfg = entry.config(cfg)  # the row's own training fields, if it overrides any
    ops = get_backend(cfg.model.backend)
    spec = entry.spec
    files = RunFiles(run_dir(cfg, stream.name, spec, seed, stream.derived.get("order")))
    record = run_record(cfg, stream, entry, seed, base_dir)
    if files.config.exists():
        if not same_experiment(read_json(files.config), record, entry):
            raise ConfigError(str(files.config), "this run directory holds results of a different config; "
                              "choose another experiment name or delete the directory")
        if files.done.exists():
            return files.root, "skipped"
    entry.make(seed, cfg, ops).check_plan(RunPlan(cfg.train.steps_per_task, sum(not t.pretrained for t in stream.tasks),
                                                  cfg.train.grad_accum, cfg.model.max_length))
    extra_provenance = ops.start(cfg)
    model, tok = ops.load(cfg, base_dir)  # a model that does not load leaves no run directory behind
    atomic_write_json(files.config, record)
    if not files.provenance.exists():
        atomic_write_json(files.provenance, {**provenance(), **extra_provenance, "allow_code": stream.code_allowed,
                                             "data_sources": stream.data_sources})

    T = len(stream.tasks)
    start = files.finished_tasks(T)
    status = "resumed" if start > 0 else "done"
    if cfg.model.use_chat_template:  # the same tokenizer and template on every backend
        from clbench.modeling.chat import chat_stream

        stream = chat_stream(stream, tok)
    ensure_known_subset(files, cfg, stream, base_dir, lambda: ops.view(model, tok, batch_size=cfg.eval.batch_size),
                        progress, ops.numerics)  # on the model as loaded, before any strategy touches it

    def evaluate(m, desc: str, wrap=lambda view: view, keep=()) -> dict:
        with ops.evaluation_weights(m), wrap(ops.view(m, tok, batch_size=cfg.eval.batch_size, keep=keep)) as lm:
            return evaluate_row(lm, stream, cfg.eval, desc, progress)

    curves = open_curves(cfg.log, files.root, record)  # TensorBoard (and W&B if asked)
    # the same for every strategy and seed: from the cache, or computed on the model as loaded
    for which, make in (("reference", lambda: ops.reference(cfg, base_dir, model)), ("base", lambda: model)):
        if not files.root.joinpath("eval", f"{which}.json").exists():
            row = fixed_row(cfg, stream, base_dir, which, lambda make=make, which=which: evaluate(make(), f"eval {which}"),
                            numerics=ops.numerics)
            write_row(files, which, row, {"cache_file": row["cache_file"]})
            if which == "base":
                curves.probes(row["scores"], 0)
    base = read_json(files.base)
    strategy = entry.make(seed, cfg, ops)
    ops.seed(seed)
    model = ops.place(strategy.prepare_model(model))
    strategy.mark_trainable(model)

    def encode(rec):
        return encode_example(tok, rec, cfg.model.max_length)

    cut = TruncationCount(encode, cfg.model.max_length)
    views = [TaskView(i, t.name, t.train, cut.encoder(i), t.pretrained) for i, t in enumerate(stream.tasks)]
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
            optimizer = ops.make_optimizer(strategy, model, cfg.train)
            ops.load_optimizer_state(optimizer, state["optimizer"], strategy)

    def frozen_cast():  # frozen weights in the compute dtype for one phase (mixed precision), not what it trains
        return ops.frozen_cast(model, strategy.trainable.values())

    for t in range(start, T):
        view = views[t]
        if view.pretrained:
            strategy.observe_pretrained(view)
            atomic_write_json(files.after(t), {**base, "pretrained": True, "train_seconds": 0.0, "tokens": 0,
                                               "updated_elements": 0, "diagnostics": {}})
            continue
        ops.seed(task_seed(seed, t))
        with ops.training_compute():  # the hooks' own passes (a Fisher, an importance estimate) computed as training's
            strategy.before_task(view, model)
        t0 = time.perf_counter()
        log: list[dict] = []
        if strategy.trains:
            if optimizer is None or cfg.train.reset_optimizer:
                optimizer = ops.make_optimizer(strategy, model, cfg.train)
            with frozen_cast():
                log = train_task(model, tok, strategy, view, optimizer, cfg.train, task_seed(seed, t), global_step,
                                 progress)
            global_step += cfg.train.steps_per_task
        train_seconds = time.perf_counter() - t0
        with ops.training_compute(), frozen_cast():
            strategy.after_task(view, model)
        atomic_write_jsonl(files.task_log(t), log)
        diagnostics = strategy.diagnostics()
        save_checkpoint(files, t, strategy, model,
                        {"task": view.name, "task_index": t, "strategy": spec.name, "seed": seed,
                         **ops.checkpoint_meta, "diagnostics": diagnostics},
                        ops, optimizer if not cfg.train.reset_optimizer else None)
        fault_point(f"after_checkpoint:{t}")
        if strategy.scores_as_base and not strategy.trains:  # it evaluates the base model, unchanged: the base row
            row, extra = copied_row(files, "base", stream), {"copied_from": "base"}
        else:
            row, extra = evaluate(model, f"eval after {view.name}", strategy.probe_view, strategy.trainable.values()), {}
        write_row(files, t, row, {**extra, "pretrained": False, "train_seconds": train_seconds,
                                  "tokens": sum(r["tokens"] for r in log),
                                  "updated_elements": sum(r["updated_elements"] for r in log),
                                  "final_loss": log[-1]["loss"] if log else None, "diagnostics": diagnostics,
                                  "truncated_records": cut.count(t, view.name)})
        curves.task(log, row["scores"], diagnostics, global_step if strategy.trains else t)
    curves.close()
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
    order = {"order": stream.derived["order"]} if "order" in stream.derived else {}  # for orders.reindex
    atomic_write_json(files.matrix, {"tasks": [t.name for t in stream.tasks], "suites": mats, **order})
    atomic_write_json(files.metrics, {"metrics_version": METRICS_VERSION, "primary_metric": stream.spec.primary_metric,
                                      "suites": metrics, "cost": cost,
                                      "final_loss": {stream.tasks[t].name: rows[t].get("final_loss")
                                                     for t in range(T) if not rows[t].get("pretrained")},
                                      "loss_check": loss_check(logs, [t.name for t in stream.tasks]),
                                      "truncated_records": {stream.tasks[t].name: rows[t].get("truncated_records", 0)
                                                            for t in range(T) if not rows[t].get("pretrained")},
                                      "categories": category_scores(files, stream, rows)})
    atomic_write_jsonl(files.train_log, logs)
    atomic_write_bytes(files.done, b"")
