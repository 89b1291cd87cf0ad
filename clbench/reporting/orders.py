"""The task-order table: each strategy averaged over the orders it ran, and the spread between orders.

O-LoRA, CITB and SAPT report the mean over three task orders because order changes the answer. A grid
with ``orders:`` (``clbench.run.orders``) files each order as its own row in the main tables (label
``<strategy> @<order>``; the stream file's order keeps the plain label); this table puts them back
together: per strategy, the seed mean of each order, the mean of those order means (every order
weighs the same, whatever its number of seeds), and the spread ``max − min`` over the order means.
"""

from __future__ import annotations

from clbench.reporting.tables import Cell, Table, fmt
from clbench.results.aggregate import Run

METRICS = (("acc", "ACC"), ("forgetting", "F"), ("learning_acc", "LA"))


GIVEN = "given"  # the stream file's own order (a run records no ``order`` then)


def order_name(run: Run) -> str:
    order = run.config.get("order")
    return order["name"] if order else GIVEN


def order_numbers(groups: dict[str, list[Run]], suite: str) -> dict:
    """``{strategy: {metric: {"orders": {order: seed mean}, "mean": .., "spread": ..}}}`` for every
    strategy label that ran more than one order."""
    by_label: dict[str, dict[str, list[Run]]] = {}
    for runs in groups.values():
        for run in runs:
            by_label.setdefault(run.strategy_label, {}).setdefault(order_name(run), []).append(run)
    out = {}
    for label, orders in sorted(by_label.items()):
        if len(orders) < 2:
            continue
        out[label] = {}
        for key, _ in METRICS:
            per_order = {}
            for name, runs in sorted(orders.items()):
                vals = [r.suite(suite).get(key) for r in runs]
                vals = [v for v in vals if v is not None]
                per_order[name] = sum(vals) / len(vals) if vals else None
            known = [v for v in per_order.values() if v is not None]
            out[label][key] = {"orders": per_order, "mean": sum(known) / len(known) if known else None,
                               "spread": max(known) - min(known) if known else None,
                               "seeds": {name: len(runs) for name, runs in sorted(orders.items())}}
    return out


def order_table(numbers: dict, stream: str, suite: str, slug: str) -> Table | None:
    """The table of :func:`order_numbers` (``None`` when no strategy ran two orders)."""
    if not numbers:
        return None
    headers = ["Strategy", "orders"]
    for _, name in METRICS:
        headers += [f"{name} mean", f"{name} spread"]
    headers.append("ACC per order")
    rows = []
    for label, m in numbers.items():
        cells = [Cell(label), Cell(str(len(m["acc"]["orders"])))]
        for key, _ in METRICS:
            for part in ("mean", "spread"):
                v = m[key][part]
                cells.append(Cell("–") if v is None else Cell(fmt(v, 3), numeric=True))
        cells.append(Cell(", ".join(f"{o} {fmt(v, 3) if v is not None else '–'} (n = {m['acc']['seeds'][o]})"
                                    for o, v in m["acc"]["orders"].items())))
        rows.append(tuple(cells))
    caption = f"Task orders on {stream} ({suite}): mean over orders of each order's seed mean, and the spread."
    notes = (f"Task orders on stream {stream} ({suite} probes): per strategy, the mean over task orders of each "
               f"order's seed mean, and the spread (max − min) between the order means; F is forgetting, LA "
               f"learning accuracy. Pretrained tasks stay first in every order.")
    return Table("Task orders", f"tab:{slug}-orders", caption, tuple(headers), "lr" + "r" * (len(headers) - 3) + "X",
                 tuple(rows), [{"strategy": lab, **m} for lab, m in numbers.items()], notes)
