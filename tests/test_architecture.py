"""The package's shape: the core never imports its plugins, the import graph has no cycle, every import
goes down a floor (or stays on its own), and the layout groups the code by stage.

The floors (:data:`FLOORS`), lowest first; a module may import from its own floor and any floor below,
never from one above, so each floor can be read, tested and changed knowing only the floors under it:

0. ``errors``, ``paths``, ``progress``, ``faults``, ``seeding`` — what every stage needs and that needs
   nothing else of clbench: the error types, safe path names, progress bars, the fault-injection hook, the
   seeds of a run (the backends seed through it, the runner derives each task's seed from it).
1. ``config`` — the experiment's and the options' dataclasses and their loader, and the period values
   of a tier schedule (``config.periods``): the vocabulary the stages are configured in.
2. ``data`` — streams, readers and encoding: configured by ``config``, knowing nothing of models.
3. ``results`` — the on-disk format: atomic writes, checksums, the run directory, the writer's lock
   (``results.lock``), reading runs back. It knows config and data (a run records both) and nothing of
   models, so the model cache (``modeling``) writes through it as a run does.
4. ``modeling`` — torch models: loading, the embedded model and its cache, LoRA, the CMS memory, the
   language-modelling loss (``modeling.lm_loss``). No training loop and no scoring here.
5. ``train`` — the strategy interface, the loop, the tier schedule and penalties: written against a
   backend that the caller passes in (``Strategy(..., backend=...)``), never importing one.
6. ``eval`` — probe scoring and the model views it asks, the test-time view of a CMS memory
   (``eval.memory_view``) included: it reads models and may read what training built, never the other way.
7. ``backends`` — torch and MLX: each implements what ``train`` and ``eval`` ask of an array library
   (the step, the optimizer, the probe view), so it sits above both.
8. ``run`` — one run and a grid of them: plans strategies on a backend, trains, scores, writes results.
9. ``reporting``, ``bench``, ``scaffold`` — what the commands do with runs and with clbench itself:
   tables from results, benchmarks and the timescale sweep's configs, a new strategy's files. Reporting
   and bench share a floor: the timescale report reads the sweep's mechanisms (``bench.timescales``),
   and the coverage benchmark measures reporting's intervals (``bench.coverage``); the no-cycle test
   still orders their modules.
10. ``cli`` — the command line, over everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "clbench"
PLUGIN_PACKAGES = ("clbench.strategies", "clbench.tasks", "strategies", "tasks")
FLOORS = {  # the module docstring says why each sits where it does
    "clbench": 0, "errors": 0, "paths": 0, "progress": 0, "faults": 0, "seeding": 0,
    "config": 1,
    "data": 2,
    "results": 3,
    "modeling": 4,
    "train": 5,
    "eval": 6,
    "backends": 7,
    "run": 8,
    "reporting": 9, "bench": 9, "scaffold": 9,
    "cli": 10,
}


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


def floor_of(module: str) -> int:
    """The floor of ``clbench.<part>...``: its package's or top-level module's (``clbench`` itself: 0)."""
    parts = module.split(".")
    return FLOORS[parts[1] if len(parts) > 1 else "clbench"]


def test_every_part_of_the_core_has_a_floor():
    parts = {m.split(".")[1] if "." in m else "clbench" for m in core_modules()}
    assert parts == set(FLOORS), (sorted(parts - set(FLOORS)), sorted(set(FLOORS) - parts))


def test_no_import_goes_up_a_floor():
    modules = core_modules()
    known = frozenset(modules)
    upward = sorted(f"{m} -> {n}" for m, p in modules.items() for n in imports_of(p, m, known)
                    if n in modules and floor_of(n) > floor_of(m))
    assert not upward, "imports that go up a floor (FLOORS):\n" + "\n".join(upward)


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
