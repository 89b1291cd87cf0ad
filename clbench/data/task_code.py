"""Stream files run no code unless the user allows it: the checks behind lm-eval task folders.

lm-eval imports the Python file a task YAML names with ``!function utils.fn`` as soon as it builds the
task, so a stream whose ``include_path`` folder holds such a YAML would run that file when the stream
is loaded, before any other check. :func:`refuse_code` finds every ``!function`` tag a task would
resolve (in its YAML, the files it ``include:``s, and the members of a group or tag) without importing
anything, and refuses the stream unless the user passes ``--allow-code`` or the stream sets
``allow_code: true``.

Prompt templates are the other way into Python: lm-eval renders them with a plain
``jinja2.Environment``, where ``{{ cycler.__init__.__globals__ }}`` reaches any module.
:func:`sandbox_templates` swaps in Jinja's own sandbox, whatever ``allow_code`` says.

lm-eval's built-in tasks (a suite without ``include_path``) are the installed package's own code and
load as lm-eval loads them.
"""

from __future__ import annotations

import functools
from pathlib import Path

from clbench.errors import ConfigError


@functools.cache
def sandbox_templates() -> None:
    """Render lm-eval's prompt templates in ``jinja2.sandbox.ImmutableSandboxedEnvironment``.

    ``lm_eval.utils.apply_template`` (every template lm-eval renders) reads the module's ``env`` at
    each call; the sandbox gets lm-eval's settings and filters, so every legitimate template renders
    the same, and one that reaches for ``__globals__`` raises ``jinja2.exceptions.SecurityError``.
    """
    from jinja2 import BaseLoader, StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from lm_eval import utils

    env = ImmutableSandboxedEnvironment(loader=BaseLoader, undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters.update(utils.env.filters)
    utils.env = env


def function_tags(path: Path, seen: set[Path] | None = None) -> list[tuple[str, int, str]]:
    """``(file, line, argument)`` of every ``!function`` tag in a task YAML and in the files it
    ``include:``s, read with a ``yaml.SafeLoader`` that records the tags instead of importing."""
    import yaml

    seen = set() if seen is None else seen
    path = Path(path).resolve()
    if path in seen or not path.is_file():
        return []
    seen.add(path)
    found: list[tuple[str, int, str]] = []

    class Recorder(yaml.SafeLoader):
        pass

    def record(loader, node):
        found.append((str(path), node.start_mark.line + 1, str(loader.construct_scalar(node))))
        return "!function"

    Recorder.add_constructor("!function", record)
    try:
        with open(path, encoding="utf-8") as fh:
            cfg = yaml.load(fh, Loader=Recorder)  # a SafeLoader subclass: builds plain data only
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"cannot read task YAML: {exc}") from None
    includes = cfg.get("include", []) if isinstance(cfg, dict) else []
    for inc in includes if isinstance(includes, list) else [includes]:
        if isinstance(inc, str):
            found += function_tags(path.parent / inc, seen)
    return found


def task_files(index: dict, name: str, seen: set[str] | None = None) -> list[Path]:
    """The YAML files lm-eval builds task, group or tag ``name`` from (``index``: a ``TaskManager``'s
    ``task_index``; a group's members recursively)."""
    from lm_eval.tasks._index import Kind
    from lm_eval.tasks._yaml_loader import load_yaml

    seen = set() if seen is None else seen
    entry = index.get(name)
    if entry is None or name in seen:
        return []
    seen.add(name)
    if entry.kind is Kind.TAG:
        return [p for member in sorted(entry.tags) for p in task_files(index, member, seen)]
    if entry.yaml_path is None:
        return []
    files = [Path(entry.yaml_path)]
    if entry.kind is Kind.GROUP:
        members = load_yaml(entry.yaml_path, resolve_func=False).get("task", [])  # resolves nothing
        for m in members if isinstance(members, list) else [members]:
            member = m if isinstance(m, str) else m.get("task") if isinstance(m, dict) else None
            if isinstance(member, str):
                files += task_files(index, member, seen)
    return files


def refuse_code(index: dict, task: str, where: str) -> None:
    """``ConfigError`` at the first ``!function`` lm-eval would import to build ``task``."""
    for path in task_files(index, task):
        tags = function_tags(path)
        if tags:
            file, line, target = tags[0]
            raise ConfigError(f"{file}:{line}", f"'!function {target}' would run Python code when the stream is "
                              f"loaded (lm-eval task {task!r}, {where}); a stream runs no code unless you pass "
                              "--allow-code or the stream file sets allow_code: true")
