"""The results format: one directory per run, every file written atomically.

Layout of ``<results_dir>/<experiment>/<stream>/<strategy label>/seed_<k>/``::

    config.json              resolved experiment config, strategy spec + options, seed, stream fingerprint
                             (+ ``order``: the permutation trained; ``probe_split``: validation or test items)
    provenance.json          python/torch/transformers/peft/clbench versions, git revision, host
    eval/reference.json      untrained model's scores (the b_j of forward transfer)
    eval/base.json           base model's scores before any stream task
    eval/after_<t>.json      scores after task t (a task's row; written last, so it marks t as finished)
    predictions/after_<t>/<task>.<suite>.jsonl   per-item probe records behind every score
    train_log/task_<t>.jsonl per-step log: loss, lr, step time, tokens, updated elements, strategy fields
    checkpoints/task_<t>/adapter.safetensors     trainable parameters only, metadata inside
    checkpoints/task_<t>/strategy_state.pt       the strategy's memory (replay buffer, Fisher, ...)
    checkpoints/task_<t>/checksums.json          SHA-256 of both, verified before a resume loads them
                                                 (``clbench.results.integrity``)
    matrix.json              R per probe suite (rows: after task i; columns: task j), base row, reference row
    metrics.json             ACC/BWT/FWT/forgetting/LA/general retention per suite, cost
    train_log.jsonl          all tasks' step logs, concatenated when the run finishes
    tensorboard/             TensorBoard event files: loss, lr, tier updates, drift, probe scores
    DONE                     present only when the run finished
    progress.json            where the run is (task, step, what is left), while a clbench process writes it;
                             removed when the run finishes (``clbench.run.grid_progress``)
    LOCK                     held while a clbench process writes the run (``clbench.results.lock``); one left
                             by a killed process is free to take
    .<file>.clbench-<random>.tmp  a write in progress (``clbench.results.atomic``); removed on resume

A run of a task order other than the stream file's sits one level deeper, in
``<strategy label>/order-<name>/seed_<k>/`` (``clbench.run.orders``). Beside the runs: the grid's
``<experiment>/<stream>/probe_split.json`` and each tuned row's ``<experiment>/<stream>/<label>/tuning.json``.

Every path under the results folder is made here, from names the user chose (experiment, stream, label,
order) by :func:`results_path`: :meth:`RunFiles.of` is the one definition of a run's directory.

Every folder and file name above is built by ``clbench.paths.inside`` from names that follow the name rule
(``clbench.config.names``), so none can leave ``<results_dir>``. An interrupted run keeps every finished
task; the runner resumes from the last ``after_<t>.json``.
"""

from __future__ import annotations

from pathlib import Path

from clbench.config.experiment import ExperimentConfig
from clbench.paths import component, inside
from clbench.results.atomic import (  # noqa: F401 - the writers every result file goes through
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_jsonl,
    read_json,
    read_jsonl,
)

SCHEMA_VERSION = 1


def safe_label(label: str) -> str:
    """A label as a path component (``clbench.paths.component``): unchanged when it is a valid name."""
    return component(label)


def results_path(results_dir: str | Path, *names: str) -> Path:
    """``<results_dir>/<name>/<name>/...``, each name made one path component by
    ``clbench.paths.component`` and checked by ``clbench.paths.inside``: no name can take it out of the
    results folder.

    The one place where names a user chose (experiment, stream, strategy label, task order) become a path
    under the results folder: the experiment's folder, a stream's, a row's and a run's directory are all
    made here, so a rule every such path must keep is kept in this function alone."""
    return inside(results_dir, *(component(name) for name in names))


def experiment_dir(cfg: ExperimentConfig) -> Path:
    """``<results>/<experiment>``: what ``clbench run`` reports from."""
    return results_path(cfg.results_dir, cfg.name)


def probe_split_file(cfg: ExperimentConfig, stream: str) -> Path:
    """``<results>/<experiment>/<stream>/probe_split.json`` (``clbench.run.probe_split``)."""
    return results_path(cfg.results_dir, cfg.name, stream) / "probe_split.json"


def tuning_file(cfg: ExperimentConfig, stream: str, label: str) -> Path:
    """``<results>/<experiment>/<stream>/<label>/tuning.json`` (``clbench.run.sweep``)."""
    return results_path(cfg.results_dir, cfg.name, stream, label) / "tuning.json"


class RunFiles:
    """Paths inside one run directory (the only place that knows the layout above)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @classmethod
    def of(cls, cfg: ExperimentConfig, stream: str, label: str, seed: int, order: str | None = None) -> RunFiles:
        """The run directory ``<results>/<experiment>/<stream>/<label>/seed_<k>``; a task order other than
        the stream file's (``clbench.run.orders``) adds ``order-<name>/`` before the seed."""
        orders = [f"order-{order}"] if order else []
        return cls(results_path(cfg.results_dir, cfg.name, stream, label, *orders, f"seed_{seed}"))

    config = property(lambda self: self.root / "config.json")
    provenance = property(lambda self: self.root / "provenance.json")
    reference = property(lambda self: self.root / "eval" / "reference.json")
    base = property(lambda self: self.root / "eval" / "base.json")
    matrix = property(lambda self: self.root / "matrix.json")
    metrics = property(lambda self: self.root / "metrics.json")
    train_log = property(lambda self: self.root / "train_log.jsonl")
    done = property(lambda self: self.root / "DONE")
    progress = property(lambda self: self.root / "progress.json")

    def after(self, t: int) -> Path:
        return self.root / "eval" / f"after_{t}.json"

    def row(self, key: int | str) -> Path:
        """A row of scores: ``eval/after_<t>.json`` for a task index, ``eval/<key>.json`` (base, reference)."""
        return self.after(key) if isinstance(key, int) else self.root / "eval" / f"{key}.json"

    def predictions(self, t: int | str) -> Path:
        return self.root / "predictions" / (f"after_{t}" if isinstance(t, int) else t)

    def prediction_file(self, t: int | str, task: str, suite: str) -> Path:
        """The per-item records of one probe suite in row ``t``."""
        return inside(self.predictions(t), f"{component(task)}.{component(suite)}.jsonl")

    def task_log(self, t: int) -> Path:
        return self.root / "train_log" / f"task_{t}.jsonl"

    def checkpoint(self, t: int) -> Path:
        return self.root / "checkpoints" / f"task_{t}"

    def finished_tasks(self, n_tasks: int) -> int:
        """How many leading tasks have their row written (the resume point)."""
        k = 0
        while k < n_tasks and self.after(k).exists():
            k += 1
        return k


def stored_pretrained(record: dict) -> list[bool]:
    """For each task of a stored run, whether it was pretrained (learned by the base model, its row the base
    row: ``clbench.data.streams.Stream.pretrained_flags``), read from its ``config.json`` record; a record
    written before the field existed had no pretrained task."""
    stream = record["stream"]
    return list(stream.get("pretrained", [False] * len(stream["tasks"])))


def load_run(path: Path) -> dict:
    """A finished run's config, provenance, matrices and metrics as one dict (metrics of an older
    ``metrics_version`` recomputed from the matrices: :func:`current_metrics`)."""
    f = RunFiles(path)
    run = {"path": str(path), "config": read_json(f.config), "provenance": read_json(f.provenance),
           "matrix": read_json(f.matrix), "metrics": read_json(f.metrics)}
    return {**run, "metrics": current_metrics(run["metrics"], run["matrix"])}


def current_metrics(metrics: dict, matrix: dict) -> dict:
    """``metrics.json``'s content with every suite as this version of ``clbench.results.metrics`` computes it.

    A run finished before ``METRICS_VERSION`` 2 counted pretrained tasks in LA; its suites are recomputed
    from ``matrix.json`` (the matrices are the record, metrics are derived). The pretrained tasks are the
    ones without a ``final_loss`` entry, which ``finalize`` writes for every trained task.
    """
    from clbench.results.metrics import METRICS_VERSION, summarize

    if (not isinstance(metrics, dict) or not isinstance(matrix, dict) or "suites" not in matrix
            or "final_loss" not in metrics or metrics.get("metrics_version", 1) >= METRICS_VERSION):
        return metrics  # current, or malformed: the reader's own checks name the file
    general = [i for i, name in enumerate(matrix["tasks"]) if name not in metrics["final_loss"]]
    suites = {s: summarize(m["R"], m["reference"], m["base"], general, m["higher_is_better"])
              for s, m in matrix["suites"].items()}
    return {**metrics, "suites": suites, "metrics_version": METRICS_VERSION}
