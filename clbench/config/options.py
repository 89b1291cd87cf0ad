"""Build frozen dataclasses from YAML/CLI dicts, rejecting unknown keys and wrong types.

One small loader serves the experiment config, the stream files and every strategy's options, so all of
them fail the same way: ``<file or field>: unknown key 'lr_rate' (allowed: ...) — did you mean 'lr'?``.
Hand-written rather than pydantic: the rules are few, and errors must name clbench's own files and
fields in one format.
"""

from __future__ import annotations

import dataclasses
import json
import math
import reprlib
import types
import typing
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from clbench.errors import ConfigError, did_you_mean

T = TypeVar("T")

_SHORT = reprlib.Repr()  # (keyword arguments only from Python 3.12)
_SHORT.maxstring = _SHORT.maxother = 120
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = 8
_SHORT.maxlevel, _SHORT.maxlong = 3, 60


def shown(value: Any) -> str:
    """``repr(value)`` cut to a line: an error message never prints a whole (possibly huge) value."""
    return _SHORT.repr(value)


def _check(where: str, tp: Any, value: Any) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        arms = [a for a in get_args(tp) if a is not type(None)]
        if len(arms) == 1 and value is not None:  # ``X | None`` given a value: X's own error (unknown key...)
            return _check(where, arms[0], value)
        errors = []
        for arm in get_args(tp):
            try:
                return _check(where, arm, value)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(where, f"{shown(value)} matches none of {tp}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(where, f"expected null, got {shown(value)}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(where, f"invalid value {shown(value)}", [str(a) for a in get_args(tp)])
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(where, f"expected a list, got {shown(value)}")
        (arm, *_rest) = get_args(tp) or (Any,)
        return tuple(_check(f"{where}[{i}]", arm, v) for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(where, f"expected a mapping, got {shown(value)}")
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(where, f"expected a finite number, got {shown(value)}")
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(where, f"expected true or false, got {shown(value)}")
    if tp in (int, float, str) and (not isinstance(value, tp) or isinstance(value, bool)):
        raise ConfigError(where, f"expected {tp.__name__}, got {shown(value)}")
    if tp is str and "\0" in value:  # no file system takes it in a path, and no text needs it
        raise ConfigError(where, f"a NUL byte (\\0) at character {value.index(chr(0)) + 1} of {shown(value)}")
    return value


def from_dict(cls: type[T], data: Any, where: str) -> T:
    """An instance of dataclass ``cls`` from ``data``; missing keys take the field defaults."""
    if data is None:
        data = {}
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(where, f"expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    keys = getattr(cls, "YAML_KEYS", {})  # YAML key -> field name, for keys that are Python keywords ('with')
    data = {keys.get(k, k): v for k, v in data.items()}
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    shown = {v: k for k, v in keys.items()}
    unknown = [k for k in data if k not in names]
    moved = getattr(cls, "MOVED_KEYS", {})  # old key -> the field path(s) it moved to
    if unknown and unknown[0] in moved:
        raise ConfigError(f"{where}.{unknown[0]}", moved_key_text(unknown[0], moved[unknown[0]], data[unknown[0]]))
    gone = getattr(cls, "GONE_KEYS", {})  # old key -> what to write instead (it left for another component)
    if unknown and unknown[0] in gone:
        raise ConfigError(f"{where}.{unknown[0]}", gone[unknown[0]])
    if unknown:
        allowed = [shown.get(n, n) for n in names]
        raise ConfigError(where, f"unknown key {unknown[0]!r}{did_you_mean(unknown[0], allowed)}", allowed)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    required = [n for n in names if fields[n].default is dataclasses.MISSING
                and fields[n].default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in data]
    if missing:
        raise ConfigError(where, f"missing required key {shown.get(missing[0], missing[0])!r}",
                          [shown.get(n, n) for n in names])
    kwargs = {k: _check(f"{where}.{shown.get(k, k)}", hints[k], v) for k, v in data.items()}
    for k, v in kwargs.items():
        _check_bounds(f"{where}.{shown.get(k, k)}", fields[k], v)
    return cls(**kwargs)


def moved_key_text(key: str, targets: tuple[str, ...], value: Any, dotted: bool = False) -> str:
    """What to write instead of a key that moved (``MOVED_KEYS``: old key -> the field paths it went to),
    with the user's value: ``lora: {rank: 8}`` (``dotted``: ``lora.rank: 8``, as a sweep names it)."""
    def form(path: str) -> str:
        if dotted:
            return f"{path}: {json.dumps(value)}"
        *groups, last = path.split(".")
        return "".join(f"{g}: {{" for g in groups) + f"{last}: {json.dumps(value)}" + "}" * len(groups)

    if len(targets) == 1:
        return f"{key!r} is now {targets[0]!r}: write {form(targets[0])}"
    return (f"{key!r} set {' and '.join(map(repr, targets))} at once, which are separate options now; write the "
            f"one you mean: {' or '.join(map(form, targets))}")


def with_moved_keys(cls: type, data: dict) -> dict:
    """Options an older clbench stored (``config.json``) with each key of ``cls.MOVED_KEYS`` put where it
    went — in every target, for a key that set several fields at once (as that older code did) — and the
    keys of ``cls.GONE_KEYS`` dropped: they left these options for another component, and a record that
    holds them ran without them mattering (e.g. ``cms``'s local-rule fields on an ``update: outer`` run)."""
    moved = getattr(cls, "MOVED_KEYS", {})
    gone = getattr(cls, "GONE_KEYS", {})
    names = {f.name for f in dataclasses.fields(cls)}
    out = {k: v for k, v in data.items() if k in names or (k not in moved and k not in gone)}
    for key, value in data.items():
        if key not in names and key in moved:
            for path in moved[key]:
                set_path(out, path, value)
    return out


def set_path(data: dict, path: str, value: Any) -> None:
    """``data[a][b] = value`` for ``path`` ``"a.b"``; the groups on the way are copied, never shared with
    the dict they came from (a spec's options stay as the user wrote them)."""
    *groups, last = path.split(".")
    for g in groups:
        child = dict(data.get(g) or {})
        data[g] = child
        data = child
    data[last] = value


def to_dict(obj: Any) -> Any:
    """Plain JSON-able data from (nested) dataclasses; tuples become lists."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def describe_fields(cls: type, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """``(name, type, default, help)`` per field, for ``clbench list``; help comes from field metadata. A
    group of options (a nested dataclass, e.g. ``lora``) is listed field by field as ``lora.rank``."""
    hints = get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(describe_fields(tp, f"{prefix}{f.name}."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        rows.append((prefix + f.name, getattr(tp, "__name__", str(tp)).replace("typing.", ""), default,
                     f.metadata.get("help", "")))
    return rows


BOUNDS = {"ge": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b), "le": ("<=", lambda v, b: v <= b)}


def opt(default: Any, help: str, **bounds: float) -> Any:
    """A dataclass field with a default, a help text (shown by ``clbench list``) and optional numeric
    bounds ``ge`` / ``gt`` / ``le`` that :func:`from_dict` enforces on given values."""
    unknown = set(bounds) - set(BOUNDS)
    if unknown:
        raise TypeError(f"unknown bound(s) {sorted(unknown)}; known: {sorted(BOUNDS)}")
    metadata = {"help": help, "bounds": bounds}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _check_bounds(where: str, field: dataclasses.Field, value: Any) -> None:
    """The field's bounds on ``value`` — on each element when the field is a list (``seeds``)."""
    if value is None:  # an optional field left unset
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_bounds(f"{where}[{i}]", field, v)
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return  # not a number ('all' in a list of seeds): the type check names it
    for name, bound in field.metadata.get("bounds", {}).items():
        symbol, ok = BOUNDS[name]
        if not ok(value, bound):
            raise ConfigError(where, f"must be {symbol} {bound}, got {shown(value)}")


def check_bounds(obj: Any) -> None:
    """Enforce every field's ``opt`` bounds on a dataclass instance (for ``__post_init__``, so options
    built in Python are held to the same bounds as options loaded from YAML)."""
    for f in dataclasses.fields(obj):
        _check_bounds(f"{type(obj).__name__}.{f.name}", f, getattr(obj, f.name))
