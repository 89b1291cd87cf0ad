"""The name rule: every name a stream or an experiment gives that becomes part of a path.

An experiment name, a stream name, a task name, a probe-suite name and a strategy row's label each
become a folder or a file name (``results/<experiment>/<stream>/<label>/seed_<k>/predictions/after_<t>/
<task>.<suite>.jsonl``, ``<cache>/base_models/<stream>-<key>/``, ``<report>/<stream>/``). So each must
be an identifier, checked when the stream or the config is loaded:

* ASCII letters, digits and ``_ . + -`` only — no ``/``, no space, no NUL, nothing a shell or a file
  system reads specially;
* starting with a letter or a digit — so never ``.`` or ``..``, never a hidden file, never an option;
* at most :data:`MAX_NAME` characters — a task and a suite name together stay far below any file
  system's 255-byte limit on one path component.

Names clbench derives itself (a tuning candidate ``sft~lr=0.001``, a task order ``medical>notes``) are
made safe by ``clbench.paths.component``; every path is then built by ``clbench.paths.inside``, which
refuses any part that would leave its root.
"""

from __future__ import annotations

import re

from clbench.errors import ConfigError

MAX_NAME = 64
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
RULE = (f"a name is 1 to {MAX_NAME} ASCII letters, digits and '_' '.' '+' '-', starting with a letter or a digit, "
        "because it becomes part of a file path")


def name_problem(value: object) -> str | None:
    """Why ``value`` is not a valid name, or ``None`` when it is one."""
    if not isinstance(value, str):
        return f"expected a name, got {value!r}"
    if not value:
        return "the name is empty"
    if len(value) > MAX_NAME:
        return f"the name has {len(value)} characters, more than {MAX_NAME}"
    if not NAME_RE.fullmatch(value):
        bad = next((c for c in value if not re.fullmatch(r"[A-Za-z0-9_.+-]", c)), None)
        what = f"character {bad!r}" if bad is not None else f"first character {value[0]!r}"
        return f"{value!r} is not a valid name ({what})"
    return None


def check_name(value: object, where: str) -> str:
    """``value`` if it is a valid name, else a ``ConfigError`` at ``where`` stating the rule."""
    problem = name_problem(value)
    if problem:
        raise ConfigError(where, f"{problem}; {RULE}")
    return value
