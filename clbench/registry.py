"""The strategy registry: one decorator, loud errors, no silent discovery.

``@register("name")`` on a :class:`~clbench.strategy.Strategy` subclass adds it. Built-in strategies
live one per file in the top-level ``strategies`` package, which is imported on first lookup (an import
error there is raised, never turned into a warning). Third-party packages register through the
``clbench.strategies`` entry-point group: each entry point names a module (or ``module:Class``) whose
import runs its ``@register`` decorators.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points

from clbench.errors import ConfigError, did_you_mean

_STRATEGIES: dict[str, type] = {}
_LOADED = False
ENTRY_POINT_GROUP = "clbench.strategies"


def register(name: str):
    """Class decorator: make a Strategy subclass available under ``name``."""
    from clbench.strategy import Strategy

    def deco(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise TypeError(f"@register({name!r}) needs a Strategy subclass, got {cls!r}")
        existing = _STRATEGIES.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"strategy {name!r} is registered twice: {existing.__module__} and {cls.__module__}")
        cls.name = name
        _STRATEGIES[name] = cls
        return cls

    return deco


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    import strategies

    for info in sorted(pkgutil.iter_modules(strategies.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"strategies.{info.name}")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        module = ep.value.split(":")[0]
        importlib.import_module(module)


def names() -> list[str]:
    """Every registered strategy name, in registration order (built-ins sorted by file name)."""
    _load_all()
    return list(_STRATEGIES)


def get(name: str) -> type:
    """The class registered as ``name``; unknown names list the known ones."""
    _load_all()
    try:
        return _STRATEGIES[name]
    except KeyError:
        raise ConfigError("strategy", f"unknown strategy {name!r}{did_you_mean(name, _STRATEGIES)}",
                          _STRATEGIES) from None
