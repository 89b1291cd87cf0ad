"""Bounded memories of earlier tasks' training records, seeded and resumable.

Two filling policies, the two that rehearsal papers and Avalanche use:

* :class:`ReservoirBuffer` — reservoir sampling (Vitter's algorithm R) over every record ever added:
  each record seen so far is in the buffer with the same probability ``capacity / seen``, so a large
  task takes a proportionally large share.
* :class:`BalancedBuffer` — the capacity is split equally over the tasks added so far (remainder to
  the earliest), each task keeping a uniform random subset of its records; adding a task shrinks the
  earlier groups by dropping the tail of their (already random) order. This is Avalanche's
  ``ExperienceBalancedBuffer(adaptive_size=True)``.

Hand-written rather than Avalanche's storage policies because those store ``AvalancheDataset``
subsets, while clbench's records are plain dicts (text, or tensors in the cross-check) that must go
through ``torch.save(weights_only=True)`` with the rest of a strategy's state. Every random choice
comes from a generator seeded by ``(seed, what is being done)``, so a resumed run makes the same
choices as an uninterrupted one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def group_sizes(capacity: int, n_groups: int) -> list[int]:
    """``capacity`` split over ``n_groups`` as evenly as possible, remainder to the first groups."""
    base, rem = divmod(capacity, n_groups)
    return [base + (1 if i < rem else 0) for i in range(n_groups)]


def draw(records: Sequence[dict], n: int, seed: str) -> list[dict]:
    """``n`` records from ``records``, as evenly as possible: whole copies, then a sample without replacement.

    With ``n ≤ len(records)`` every record appears at most once; with more, each appears ``n // len``
    or ``n // len + 1`` times (how a cycling memory loader oversamples a small buffer).
    """
    if n <= 0 or not records:
        return []
    rng = random.Random(seed)
    copies, rest = divmod(n, len(records))
    out = [r for _ in range(copies) for r in records] + rng.sample(list(records), rest)
    rng.shuffle(out)
    return out


class _Buffer:
    """What every buffer policy shares: a capacity (records kept at most) and the seed of its draws."""

    def __init__(self, capacity: int, seed: int = 0):
        if capacity < 0:
            raise ValueError(f"buffer capacity must be >= 0, got {capacity}")
        self.capacity, self.seed = capacity, seed


class ReservoirBuffer(_Buffer):
    """Reservoir sampling over all records added, across tasks."""

    policy = "reservoir"

    def __init__(self, capacity: int, seed: int = 0):
        super().__init__(capacity, seed)
        self.items: list[tuple[str, dict]] = []  # (task name, record)
        self.seen = 0
        self.tasks: list[str] = []

    def add(self, task: str, records: Sequence[dict]) -> None:
        if task in self.tasks:
            raise ValueError(f"task {task!r} was already added to the replay buffer")
        self.tasks.append(task)
        rng = random.Random(f"reservoir:{self.seed}:{self.seen}")
        for rec in records:
            self.seen += 1
            if len(self.items) < self.capacity:
                self.items.append((task, rec))
            else:
                j = rng.randrange(self.seen)
                if j < self.capacity:
                    self.items[j] = (task, rec)

    def records(self) -> list[dict]:
        return [rec for _, rec in self.items]

    def counts(self) -> dict[str, int]:
        out = {t: 0 for t in self.tasks}
        for t, _ in self.items:
            out[t] += 1
        return out

    def __len__(self) -> int:
        return len(self.items)

    def state_dict(self) -> dict:
        return {"policy": self.policy, "capacity": self.capacity, "seen": self.seen, "tasks": list(self.tasks),
                "items": [[t, r] for t, r in self.items]}

    def load_state_dict(self, state: dict) -> None:
        _check_policy(self, state)
        self.seen, self.tasks = int(state["seen"]), list(state["tasks"])
        self.items = [(t, r) for t, r in state["items"]]


class BalancedBuffer(_Buffer):
    """An equal share of the capacity per task, each share a uniform random subset of that task."""

    policy = "balanced"

    def __init__(self, capacity: int, seed: int = 0):
        super().__init__(capacity, seed)
        self.groups: dict[str, list[dict]] = {}  # task name -> records, in random order

    @property
    def tasks(self) -> list[str]:
        return list(self.groups)

    def add(self, task: str, records: Sequence[dict]) -> None:
        if task in self.groups:
            raise ValueError(f"task {task!r} was already added to the replay buffer")
        rng = random.Random(f"balanced:{self.seed}:{len(self.groups)}:{task}")
        self.groups[task] = rng.sample(list(records), len(records))
        for name, size in zip(self.groups, group_sizes(self.capacity, len(self.groups))):
            self.groups[name] = self.groups[name][:size]

    def records(self) -> list[dict]:
        return [rec for group in self.groups.values() for rec in group]

    def counts(self) -> dict[str, int]:
        return {t: len(g) for t, g in self.groups.items()}

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups.values())

    def state_dict(self) -> dict:
        return {"policy": self.policy, "capacity": self.capacity, "groups": [[t, g] for t, g in self.groups.items()]}

    def load_state_dict(self, state: dict) -> None:
        _check_policy(self, state)
        self.groups = {t: list(g) for t, g in state["groups"]}


def _check_policy(buffer, state: dict) -> None:
    if state.get("policy") != buffer.policy or state.get("capacity") != buffer.capacity:
        raise ValueError(f"replay state is a {state.get('policy')} buffer of {state.get('capacity')} records; "
                         f"this run uses a {buffer.policy} buffer of {buffer.capacity}")


BUFFERS = {"reservoir": ReservoirBuffer, "balanced": BalancedBuffer}


def make_buffer(policy: str, capacity: int, seed: int = 0):
    """A buffer of the named policy (``reservoir`` or ``balanced``)."""
    return BUFFERS[policy](capacity, seed)
