"""Task orders as a grid axis: the same stream trained in several orders, one run directory each.

Order changes the answer in continual learning (O-LoRA, CITB and SAPT report three orders each), so a
grid may list ``orders:`` in the experiment file::

    orders: [given, reversed]                          # the stream file's order and its reverse
    orders: [given, [notes, medical]]                  # explicit permutations of the trained tasks
    orders: [given, {random: 2, seed: 0}]              # K distinct random permutations from a seed

Only the trained tasks move: pretrained tasks (learned by the base model, row 0 of R) always stay
first, in the file's order. An explicit permutation names every trained task once (pretrained tasks
may be listed at its front). Each order is a :class:`TaskOrder` with a name (``given``, ``reversed``,
``random-<seed>-<k>`` or the task names joined by ``>``) and the permutation as indices into the
stream file's tasks; the run directory of a non-given order is ``<label>/order-<name>/seed_<k>`` and
``config.json`` records the permutation the run trained.

Matrices are stored in training order (every metric is defined on it); :func:`reindex` gives R with
rows and columns in the stream file's order, so runs of different orders can be compared cell by cell.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from clbench.errors import ConfigError

GIVEN = "given"


@dataclass(frozen=True)
class TaskOrder:
    name: str
    permutation: tuple[int, ...]  # indices into the stream file's tasks, in training order

    @property
    def is_given(self) -> bool:
        return self.permutation == tuple(range(len(self.permutation)))


def _split(stream) -> tuple[list[int], list[int]]:
    return stream.pretrained_indices, stream.trained_indices


def _explicit(entry: list, stream, where: str) -> TaskOrder:
    names = [t.name for t in stream.tasks]
    pre, trained = _split(stream)
    for name in entry:
        if name not in names:
            raise ConfigError(where, f"unknown task {name!r}", names)
    picked = [names.index(n) for n in entry if names.index(n) not in pre]
    if sorted(picked) != trained or len(picked) != len(trained):
        raise ConfigError(where, f"an order lists every trained task exactly once, got {list(entry)}",
                          [names[i] for i in trained])
    return TaskOrder(">".join(names[i] for i in picked), tuple(pre + picked))


def _random(entry: dict, stream, where: str) -> list[TaskOrder]:
    unknown = set(entry) - {"random", "seed"}
    if unknown:
        raise ConfigError(where, f"unknown key {min(unknown)!r}", ["random", "seed"])
    k, seed = entry["random"], entry.get("seed", 0)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1 or not isinstance(seed, int):
        raise ConfigError(where, f"random: K needs an integer K >= 1 and an integer seed, got {entry!r}")
    pre, trained = _split(stream)
    possible = 1
    for n in range(2, len(trained) + 1):
        possible *= n
    if k > possible:
        raise ConfigError(where, f"{len(trained)} trained tasks have only {possible} orders; asked for {k}")
    rng = random.Random(seed)
    seen: list[tuple[int, ...]] = []
    while len(seen) < k:  # distinct permutations, drawn in a fixed sequence from the seed
        perm = tuple(pre + rng.sample(trained, len(trained)))
        if perm not in seen:
            seen.append(perm)
    return [TaskOrder(f"random-{seed}-{i}", p) for i, p in enumerate(seen)]


def parse_orders(entries, stream, where: str = "orders") -> list[TaskOrder]:
    """The experiment's ``orders:`` entries as :class:`TaskOrder` s (at least one; ``[given]`` when empty)."""
    pre, trained = _split(stream)
    out: list[TaskOrder] = []
    for i, entry in enumerate(entries or [GIVEN]):
        at = f"{where}[{i}]"
        if entry == GIVEN:
            out.append(TaskOrder(GIVEN, tuple(pre + trained)))
        elif entry == "reversed":
            out.append(TaskOrder("reversed", tuple(pre + trained[::-1])))
        elif isinstance(entry, (list, tuple)):
            out.append(_explicit(list(entry), stream, at))
        elif isinstance(entry, dict) and "random" in entry:
            out.extend(_random(entry, stream, at))
        else:
            raise ConfigError(at, f"unknown order {entry!r}", [GIVEN, "reversed", "[task, ...]", "{random: K, seed: S}"])
    names = [o.name for o in out]
    perms = [o.permutation for o in out]
    for j, o in enumerate(out):
        if names.index(o.name) != j or perms.index(o.permutation) != j:
            raise ConfigError(where, f"order {o.name!r} ({'>'.join(stream.tasks[i].name for i in o.permutation)}) "
                              "appears twice")
    return out


def reorder(stream, order: TaskOrder):
    """``stream`` with its tasks in ``order`` (the same stream object for the given order)."""
    if order.is_given:
        return stream
    tasks = tuple(stream.tasks[i] for i in order.permutation)
    spec = replace(stream.spec, tasks=tuple(stream.spec.tasks[i] for i in order.permutation))
    derived = {**stream.derived, "source_fingerprint": stream.file_fingerprint, "order": order_record(stream, order)}
    return replace(stream, spec=spec, tasks=tasks, derived=derived)


def order_record(stream, order: TaskOrder) -> dict:
    """What ``config.json`` stores about the order: its name, the permutation, the file's task names."""
    return {"name": order.name, "permutation": list(order.permutation),
            "stream_tasks": [t.name for t in stream.tasks]}


def reindex(matrix: dict, suite: str) -> list[list]:
    """R of ``suite`` from ``matrix.json`` with rows (after training task a) and columns (score on task b)
    in the stream file's order; a given-order run's R is returned unchanged."""
    R = matrix["suites"][suite]["R"]
    order = matrix.get("order")
    if not order:
        return [list(r) for r in R]
    perm = order["permutation"]  # position p in training order holds stream task perm[p]
    pos = {task: p for p, task in enumerate(perm)}
    n = len(perm)
    return [[R[pos[a]][pos[b]] for b in range(n)] for a in range(n)]
