"""The package's shape: the core never imports its plugins, the import graph has no cycle, and the
layout groups the code by stage."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "clbench"
PLUGIN_PACKAGES = ("clbench.strategies", "clbench.tasks", "strategies", "tasks")


def core_modules() -> dict[str, Path]:
    """Every module of the core (``clbench/`` without the ``strategies`` and ``tasks`` links)."""
    out = {}
    for path in CORE.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[1] in ("strategies", "tasks"):
            continue
        name = ".".join(rel.with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports_of(path: Path, module: str, modules: frozenset = frozenset()) -> set[str]:
    """Absolute names imported by a module, at any depth (inside functions too). ``from pkg import mod``
    of a submodule ``mod`` is an edge to ``pkg.mod`` (its package's ``__init__`` runs as every
    submodule's parent does, not as an import of the package's names)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            subs = [f"{base}.{a.name}" for a in node.names]
            names.update(subs)
            if not all(s in modules for s in subs):
                names.add(base)
    return names


def test_the_core_never_imports_strategies_or_tasks():
    offenders = {m: sorted(n for n in imports_of(p, m) if n.startswith(PLUGIN_PACKAGES))
                 for m, p in core_modules().items()}
    offenders = {m: ns for m, ns in offenders.items() if ns}
    assert not offenders, offenders


def test_the_import_graph_of_the_core_has_no_cycle():
    modules = core_modules()
    known = frozenset(modules)
    graph = {m: {n for n in imports_of(p, m, known) if n in modules and n != m} for m, p in modules.items()}
    # a package's __init__ importing nothing of its children is what keeps `import clbench.x.y` light;
    # an edge to a package means its __init__, which is a module like any other here
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_layout_shows_the_stages():
    stages = {p.name for p in CORE.iterdir() if p.is_dir() and not p.is_symlink() and p.name != "__pycache__"}
    assert {"config", "data", "train", "eval", "results", "reporting", "run", "backends", "bench",
            "modeling"} <= stages
    # where a newcomer looks: a strategy hooks in, a probe is scored, a table number comes from
    for rel in ("train/strategy.py", "train/loop.py", "train/step.py", "eval/probes.py", "results/aggregate.py",
                "reporting/tables.py", "backends/base.py"):
        assert (CORE / rel).is_file(), rel
    # strategies/ and tasks/ stay top-level folders of the repository, installed under clbench's namespace
    assert (CORE / "strategies").resolve() == ROOT / "strategies"
    assert (CORE / "tasks").resolve() == ROOT / "tasks"
    import clbench.strategies
    import clbench.tasks

    assert Path(clbench.strategies.__file__).resolve().parent == ROOT / "strategies"
    assert Path(clbench.tasks.__file__).resolve().parent == ROOT / "tasks"
