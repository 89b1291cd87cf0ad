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
import re
from pathlib import Path

from clbench.errors import ConfigError

MAX_TEMPLATE_CHARS = 1 << 20  # the longest string or list a prompt template may build, and its longest output


def _too_big(what: str) -> ConfigError:
    return ConfigError("lm-eval prompt template", f"would build {what}; the sandbox stops at {MAX_TEMPLATE_CHARS:,} "
                       "characters (clbench.data.task_code.MAX_TEMPLATE_CHARS)")


def _size(value) -> int | None:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else None


def _bounded_binop(op: str, left, right):
    """``left <op> right`` unless the result would be a string or list over the limit (``'x' * 4000000000``,
    a doubling ``+``) or an integer power with a huge exponent."""
    import operator

    if op == "*":
        for seq, n in ((left, right), (right, left)):
            if _size(seq) is not None and isinstance(n, int) and _size(seq) * n > MAX_TEMPLATE_CHARS:
                raise _too_big(f"a sequence of {_size(seq) * n:,} items by '*'")
    if (op == "+" and _size(left) is not None and _size(right) is not None
            and _size(left) + _size(right) > MAX_TEMPLATE_CHARS):
        raise _too_big(f"{_size(left) + _size(right):,} characters by '+'")
    if op == "**" and isinstance(left, int) and isinstance(right, int) and abs(right) > 4096 and abs(left) > 1:
        raise _too_big(f"a power with exponent {right}")
    if op == "%" and isinstance(left, str):
        for width in re.findall(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?", left):
            if any(w == "*" or (w and int(w) > MAX_TEMPLATE_CHARS) for w in width):
                raise _too_big(f"a field of width {'/'.join(w for w in width if w)} in '%' formatting")
        out = left % right
        if len(out) > MAX_TEMPLATE_CHARS:
            raise _too_big(f"{len(out):,} characters by '%'")
        return out
    return {"*": operator.mul, "+": operator.add, "**": operator.pow, "%": operator.mod}[op](left, right)


def _bounded_concat(parts) -> str:
    """``"".join(parts)``, stopping once the output passes the limit (a loop printing a long string)."""
    out, total = [], 0
    for part in parts:
        total += len(part)
        if total > MAX_TEMPLATE_CHARS:
            raise _too_big(f"an output of more than {total:,} characters")
        out.append(part)
    return "".join(out)


def _width_bounded(filter_fn, position: int, name: str):
    """A Jinja filter whose width argument (``center(4000000000)``) is held to the limit."""
    def bounded(*args, **kwargs):
        width = kwargs.get("width", args[position] if len(args) > position else 0)
        if isinstance(width, int) and width > MAX_TEMPLATE_CHARS:
            raise _too_big(f"a width of {width:,} in '{name}'")
        return filter_fn(*args, **kwargs)
    return bounded


@functools.cache
def sandbox_templates() -> None:
    """Render lm-eval's prompt templates in a bounded ``jinja2.sandbox.ImmutableSandboxedEnvironment``.

    ``lm_eval.utils.apply_template`` (every template lm-eval renders) reads the module's ``env`` at
    each call; the sandbox gets lm-eval's settings and filters, so every legitimate template renders
    the same, and one that reaches for ``__globals__`` raises ``jinja2.exceptions.SecurityError``.

    Jinja's sandbox stops code, not resource use: ``{{ ('x' * 4000000000)[:5] }}`` took 4 GB and 16 s a
    document. So this one also bounds size: a string or list built by ``*``, ``+`` or ``%``, a filter width
    (``center``, ``indent``) and the rendered output may not pass :data:`MAX_TEMPLATE_CHARS`, a power not an
    exponent of 4096 (Jinja itself caps ``range`` at 100,000 items). CPU time is not bounded: loops nested
    deep enough over long ranges still take long (the task folder is one the user chose to point at).
    """
    from jinja2 import BaseLoader, StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from lm_eval import utils

    class BoundedSandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "+", "**", "%"})
        concat = staticmethod(_bounded_concat)

        def call_binop(self, context, operator, left, right):
            return _bounded_binop(operator, left, right)

    env = BoundedSandbox(loader=BaseLoader, undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters.update(utils.env.filters)
    for name, position in (("center", 1), ("indent", 1)):
        env.filters[name] = _width_bounded(env.filters[name], position, name)
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
