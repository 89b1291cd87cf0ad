"""The strategy registry: one decorator, loud errors, no silent discovery.

``@register("name")`` on a :class:`~clbench.train.strategy.Strategy` subclass adds it. The registry
never names a strategy module itself: strategies come from the ``clbench.strategies`` entry-point
group, read on first lookup. Each entry point names a module (or ``module:Class``) whose import runs its
``@register`` decorators, or a package, whose modules are all imported in name order. clbench's own
strategies are one such entry point (``builtin = "clbench.strategies"`` in ``pyproject.toml``: the
repository's top-level ``strategies/`` folder, installed under clbench's namespace); a third-party package
adds its own the same way. An import error is raised, never turned into a warning.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points

from clbench.errors import ConfigError, did_you_mean

_STRATEGIES: dict[str, type] = {}
_PLUGINS: dict[str, type] = {}  # composable pieces (``clbench.train.plugin``), added with a grid entry's ``with:``
_LOADED = False
ENTRY_POINT_GROUP = "clbench.strategies"


def _registrar(table: dict[str, type], kind: str, base: type, name: str):
    """The decorator that adds a ``base`` subclass to ``table`` under ``name`` (a duplicate is an error)."""
    decorator = "register" if kind == "strategy" else "register_plugin"

    def deco(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise TypeError(f"@{decorator}({name!r}) needs a {base.__name__} subclass, got {cls!r}")
        existing = table.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"{kind} {name!r} is registered twice: {existing.__module__} and {cls.__module__}")
        cls.name = name
        table[name] = cls
        return cls

    return deco


def register(name: str):
    """Class decorator: make a Strategy subclass available under ``name``."""
    from clbench.train.strategy import Strategy

    return _registrar(_STRATEGIES, "strategy", Strategy, name)


def register_plugin(name: str):
    """Class decorator: make a ``clbench.train.plugin.Plugin`` subclass available to ``with:`` as ``name``."""
    from clbench.train.plugin import Plugin

    return _registrar(_PLUGINS, "plugin", Plugin, name)


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name != "builtin", e.name)):
        import_plugin(ep.value.split(":")[0])
    if not _STRATEGIES:
        raise ConfigError("strategy", f"no strategy is registered: the {ENTRY_POINT_GROUP!r} entry points are "
                          "missing — install clbench (pip install -e .) rather than running it from a bare checkout")


def import_plugin(module_name: str) -> None:
    """Import ``module_name``; a package's modules (not starting with ``_``) are imported too, in name order."""
    module = importlib.import_module(module_name)
    for info in sorted(pkgutil.iter_modules(getattr(module, "__path__", [])), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{module_name}.{info.name}")


def names() -> list[str]:
    """Every registered strategy name, in registration order (built-ins sorted by file name)."""
    _load_all()
    return list(_STRATEGIES)


def get(name: str) -> type:
    """The class registered as ``name``; unknown names list the known ones."""
    _load_all()
    if name in _STRATEGIES:
        return _STRATEGIES[name]
    if name in _PLUGINS:
        raise ConfigError("strategy", f"{name!r} is a plugin, not a strategy: add it to one, e.g. "
                          f"{{name: sft, label: {name}, with: [{name}]}}", _STRATEGIES)
    raise ConfigError("strategy", f"unknown strategy {name!r}{did_you_mean(name, _STRATEGIES)}", _STRATEGIES)


def plugin_names() -> list[str]:
    """Every registered plugin name."""
    _load_all()
    return list(_PLUGINS)


def get_plugin(name: str) -> type:
    """The plugin registered as ``name``; unknown names list the known ones."""
    _load_all()
    try:
        return _PLUGINS[name]
    except KeyError:
        raise ConfigError("with", f"unknown plugin {name!r}{did_you_mean(name, _PLUGINS)}", _PLUGINS) from None
