"""lm-eval task suites at load time: find the task, check its metric and filter, load it once.

A stream's ``kind: lm_eval`` suite is checked here, when the stream is loaded (``clbench.data.streams``),
so a missing file or an unknown metric is reported with the stream file's field before anything runs.
Scoring the model on the loaded task is ``clbench.eval.lm_eval_suite``'s job; both share the cached
:func:`loaded_task`.

Tasks come from ``TaskManager(include_path=<folder>, include_defaults=False)`` when the stream names a
folder (only those YAML files are indexed: fast, and nothing reaches a hub), or from lm-eval's built-in
tasks otherwise (their datasets must already be in the local Hugging Face cache). A relative
``data_files`` path in a task YAML is taken relative to that YAML file (lm-eval itself would take it
relative to the working directory), so a stream and its tasks work from any directory.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from clbench.data.task_code import refuse_code, sandbox_templates
from clbench.errors import ConfigError, did_you_mean


@functools.cache
def task_manager(include: str | None):
    """lm-eval's index of tasks: only ``include`` when given (fast, offline), else the built-in tasks."""
    from lm_eval.tasks import TaskManager

    if include is None:
        return TaskManager()
    return TaskManager(include_path=include, include_defaults=False)


def _resolve_data_files(files, yaml_dir: Path):
    """Relative ``data_files`` entries that exist next to the YAML become absolute paths."""
    if isinstance(files, str):
        if "://" in files or Path(files).is_absolute() or not (yaml_dir / files).exists():
            return files
        return str((yaml_dir / files).resolve())
    if isinstance(files, list):
        return [_resolve_data_files(f, yaml_dir) for f in files]
    if isinstance(files, dict):
        return {k: _resolve_data_files(v, yaml_dir) for k, v in files.items()}
    return files


def _task_spec(include: str | None, task: str):
    """What ``TaskManager.load`` gets: a YAML task's full config with its data files resolved, else the name."""
    from lm_eval.tasks._index import Kind
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = task_manager(include).task_index.get(task)
    if entry is None or entry.kind is not Kind.TASK or entry.yaml_path is None:
        return task  # a group or a Python task: lm-eval builds it from its own files
    cfg = load_yaml(entry.yaml_path, resolve_func=True)
    kwargs = dict(cfg.get("dataset_kwargs") or {})
    if "data_files" in kwargs:
        kwargs["data_files"] = _resolve_data_files(kwargs["data_files"], Path(entry.yaml_path).parent)
        cfg["dataset_kwargs"] = kwargs
    return cfg


@functools.cache
def loaded_task(include: str | None, task: str, digest: str) -> dict:
    """lm-eval's loaded task dict (tasks built, datasets read), once per process and file content."""
    from clbench.data.readers import quiet_datasets

    with quiet_datasets():
        return task_manager(include).load([_task_spec(include, task)])


def _flat(files) -> list[str]:
    if isinstance(files, str):
        return [files]
    if isinstance(files, dict):
        files = list(files.values())
    return [f for entry in files or [] for f in _flat(entry)]


def _digest(include: str | None, task: str) -> str:
    """Hash of the task folder's files and the task's data files: results are keyed by what was scored.

    Paths enter the hash relative to the folder (a data file outside it by its name), so the same
    files give the same digest on any machine.
    """
    h = hashlib.sha256(task.encode())
    if include is None:
        return h.hexdigest()[:16]
    root = Path(include)
    files = {str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    spec = _task_spec(include, task)
    if isinstance(spec, dict):
        for f in map(Path, _flat((spec.get("dataset_kwargs") or {}).get("data_files"))):
            if f.is_file() and root not in f.resolve().parents:
                files[f.name] = f
    for name in sorted(files):
        h.update(name.encode())
        h.update(files[name].read_bytes())
    return h.hexdigest()[:16]


def resolve_suite(spec, base: Path, where: str, allow_code: bool = False) -> dict:
    """Check an lm-eval suite before anything runs; returns the suite config stored with the stream.

    The task is built here (its data read), so a missing file, an unknown metric or filter is reported
    with the stream file's field, not after training. Unless ``allow_code``, a task from the stream's
    folder that would import Python is refused before lm-eval builds it (``clbench.data.task_code``).
    """
    sandbox_templates()
    include = None
    if spec.include_path is not None:
        folder = (base / spec.include_path).resolve()
        if not folder.is_dir():
            raise ConfigError(f"{where}.include_path", f"{folder} is not a folder of lm-eval task YAML")
        include = str(folder)
    tm = task_manager(include)
    if spec.task not in tm.all_tasks:
        known = tm.all_tasks if len(tm.all_tasks) <= 50 else None
        raise ConfigError(f"{where}.task", f"no lm-eval task {spec.task!r}{did_you_mean(spec.task, tm.all_tasks)}"
                          + (f" in {include}" if include else ""), known)
    if spec.task in tm.all_tags:
        raise ConfigError(f"{where}.task", f"{spec.task!r} is a tag (several tasks, no single score); "
                          "name one task, or a group with an aggregate metric")
    if include is not None and not allow_code:
        refuse_code(tm.task_index, spec.task, f"{where}.task")
    digest = _digest(include, spec.task)
    try:
        loaded = loaded_task(include, spec.task, digest)
    except Exception as exc:  # noqa: BLE001 - lm-eval/datasets raise many types for a bad task or data
        raise ConfigError(f"{where}.task",
                          f"lm-eval could not load {spec.task!r}: {type(exc).__name__}: {exc}") from None
    tasks = list(loaded["tasks"].values())
    metrics = sorted({m for t in tasks for m in t.higher_is_better()})
    filters = sorted({f.name for t in tasks for f in t._filters})  # lm-eval keeps filters only here
    if spec.metric not in metrics:
        raise ConfigError(f"{where}.metric", f"task {spec.task!r} has no metric {spec.metric!r}", metrics)
    if spec.filter not in filters:
        raise ConfigError(f"{where}.filter", f"task {spec.task!r} has no filter {spec.filter!r}", filters)
    return {"task": spec.task, "include_path": include, "metric": spec.metric, "filter": spec.filter,
            "num_fewshot": spec.num_fewshot, "limit": spec.limit, "digest": digest,
            "higher_is_better": bool(tasks[0].higher_is_better()[spec.metric])}
