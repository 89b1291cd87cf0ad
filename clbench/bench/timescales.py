"""The timescale sweep (``make bench-timescales``): forgetting at matched learning against the slowest period P.

The nested-learning claim is about timescales: parts of a model that update slowly keep what the fast
parts overwrite. The default grid tests it at one point (tiers every [1, 2, 4] steps, a task being 180),
where every "slow" tier is still fast next to a task. This sweep moves the slowest period P from one
step to beyond the stream, for each mechanism:

* ``layer_tiers`` in both depth orders and ``importance_tiers`` (inactive tiers skipped), and the CMS
  memory beside every FFN with ``outer`` updates (eq. 71, summed chunks; ``cms``) and with its own
  δ-rule (``cms_local``, chunks counted in optimizer steps, so every mechanism shares one P axis);
* P ∈ {1, 4, 16, 64, one task, the whole stream, ∞}; three tiers spaced geometrically, periods
  ``[1, round(√P), P]``; P = ∞ is ``[1, never, never]``, the limit of that spacing: only the fastest tier
  learns (``clbench.config.periods.NEVER``). ``importance_tiers`` still updates every tier during
  each task's warm-up (its ranking phase), so its P = ∞ is "frozen after the warm-up";
* every mechanism on the global clock, so a period longer than a task still updates (at global
  multiples of P), and each at the learning rate ``make bench-tune`` chose for it at the default periods
  (configs/bench.yaml), the same at every P: the matched-learning table (``clbench.reporting.matched``)
  compares each point with ``sft`` at several learning rates (the frontier, extended below the tuned
  rate so that points that learn little still have a comparison).

This module writes the two experiment files from their base configs, so neither can drift from the other:
``configs/bench_timescales.yaml`` (the embedded model, from ``configs/bench.yaml``'s training settings;
results of its own) and ``configs/bench_timescales_real.yaml`` (SmolLM2 at the points that matter, with
``configs/bench_real.yaml``'s settings at a constant rate, and its own frontier)::

    python -m clbench.bench.timescales            # rewrite both files
    python -m clbench.bench.timescales --check    # exit 1 if a shipped file differs from what it would write

``tests/test_timescales.py`` checks the shipped files are up to date and the per-tier update counts.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import yaml

from clbench.config.periods import NEVER

ROOT = Path(__file__).resolve().parents[2]
EMBEDDED_BASE, EMBEDDED_OUT = ROOT / "configs/bench.yaml", ROOT / "configs/bench_timescales.yaml"
REAL_BASE, REAL_OUT = ROOT / "configs/bench_real.yaml", ROOT / "configs/bench_timescales_real.yaml"

TASK, STREAM = "task", "stream"  # symbolic points: one task's steps, every trained task's steps
POINTS: tuple = (1, 4, 16, 64, TASK, STREAM, NEVER)
SEEDS = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class Mechanism:
    """One line of the figure: a strategy with fixed options, swept over its period field."""

    label: str
    strategy: str
    options: dict
    field: str  # the option holding the periods (frequencies / chunk_sizes)
    rate: tuple[str, str]  # where its tuned rate is pinned in the base config: (label, "train.lr" | "options.x")
    former: tuple[str, ...] = ()  # strategy names older results store for it (cms_local was cms, update: local)


MECHANISMS = (
    Mechanism("layer_tiers", "layer_tiers", {"clock": "global"}, "frequencies", ("layer_tiers", "train.lr")),
    Mechanism("layer_tiers-deep", "layer_tiers", {"order": "deep_fast", "clock": "global"}, "frequencies",
              ("layer_tiers", "train.lr")),
    Mechanism("importance_tiers", "importance_tiers", {"clock": "global"}, "frequencies",
              ("importance_tiers", "train.lr")),
    Mechanism("cms-memory", "cms", {"form": "memory"}, "chunk_sizes", ("cms-memory", "train.lr")),
    Mechanism("cms-local", "cms_local", {"chunk_unit": "steps"}, "chunk_sizes", ("cms-local", "options.local_lr"),
              former=("cms",)),
)


def period(point, steps_per_task: int, trained_tasks: int) -> int | str:
    """The slowest period of a sweep point, in optimizer steps (or ``"never"``)."""
    return {TASK: steps_per_task, STREAM: steps_per_task * trained_tasks}.get(point, point)


def tier_periods(p: int | str, n_tiers: int = 3) -> list:
    """``n_tiers`` periods from 1 to ``p``, spaced geometrically (``[1, round(√p), p]`` for three);
    ``never`` for every tier but the fastest when ``p`` is ``never`` (the spacing's limit)."""
    if p == NEVER:
        return [1] + [NEVER] * (n_tiers - 1)
    return [max(1, round(p ** (i / (n_tiers - 1)))) for i in range(n_tiers)]


def point_label(mechanism: str, p: int | str) -> str:
    return f"{mechanism}-P{'inf' if p == NEVER else p}"


def sweep_rows(steps_per_task: int, trained_tasks: int, rates: dict, points=POINTS,
               mechanisms=MECHANISMS) -> list[dict]:
    """The grid rows of the sweep (``strategies:`` entries), mechanism by mechanism, P ascending."""
    rows = []
    for m in mechanisms:
        where, value = m.rate[1], rates[m.rate[0]]
        for point in points:
            p = period(point, steps_per_task, trained_tasks)
            options = {**m.options, m.field: tier_periods(p)}
            row = {"name": m.strategy, "label": point_label(m.label, p), "options": options}
            if where == "train.lr":
                row["train"] = {"lr": value}
            else:
                row["options"] = {**options, where.split(".", 1)[1]: value}
            rows.append(row)
    return rows


def frontier_rows(rates: list[float]) -> list[dict]:
    """``sft`` at other learning rates: the matched-learning frontier (labels ``sft-lr<rate>``)."""
    return [{"name": "sft", "label": f"sft-lr{_rate_text(r)}", "train": {"lr": r}} for r in rates]


def _rate_text(r: float) -> str:
    mantissa, exponent = f"{r:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def pinned_rates(base: dict) -> dict:
    """``{label: value}`` of the base config's pinned settings (one field each)."""
    return {label: next(iter(setting.values())) for label, setting in base.get("tuning", {}).get("pinned", {}).items()}


def trained_tasks(stream: str, base_path: Path) -> int:
    from clbench.data.streams import load_stream

    path = Path(stream)
    if path.suffix in (".yaml", ".yml") and not path.is_absolute():
        path = (base_path.parent / path).resolve()
    return len(load_stream(str(path)).trained_indices)


def _flow(value) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text.removesuffix("...").strip()  # a scalar's document-end marker


# beside sft at its tuned rate (1.5e-3); 2e-3 densifies the frontier where the sweep points learn (LA 0.80-0.85:
# between 1.5e-3 and 3e-3 alone, fewer than 90% of bootstrap replicates bracketed three of them); 5e-3 tries to
# reach above 3e-3's LA 0.89 (measured 2026-12-07: it learns less, 0.79, so the report leaves it out of the
# frontier: no sft rate learns more than 0.89 here, and points within resampling noise of it get no interval)
EMBEDDED_FRONTIER = [3e-5, 1e-4, 3e-4, 1e-3, 2e-3, 3e-3, 5e-3]


def embedded_config(base_path: Path = EMBEDDED_BASE) -> str:
    """``configs/bench_timescales.yaml``: every mechanism × point and the frontier, 5 seeds, the base's
    stream and training settings."""
    base = yaml.safe_load(base_path.read_text())
    steps = base["train"]["steps_per_task"]
    tasks = trained_tasks(base["stream"], base_path)
    rates = pinned_rates(base)
    rows = sweep_rows(steps, tasks, rates)
    points = ", ".join(str(period(p, steps, tasks)) for p in POINTS)
    lines = [
        "# GENERATED by `python -m clbench.bench.timescales` from configs/bench.yaml: edit the generator, not this file.",
        "# `make bench-timescales`: the timescale sweep (clbench/bench/timescales.py explains it). For each mechanism,",
        f"# the slowest tier's period P in {{{points}}} optimizer steps (one task = {steps}, the stream = {steps * tasks}),",
        "# tiers [1, round(√P), P] on the global clock, at the mechanism's tuned rate; beside them sft at "
        + f"{len(EMBEDDED_FRONTIER) + 1} rates,",
        "# the matched-learning frontier. The report's Timescales figure and table read these runs.",
        f"# {len(rows)} sweep rows + {len(EMBEDDED_FRONTIER) + 1} frontier rows, {len(SEEDS)} seeds: "
        + f"{(len(rows) + len(EMBEDDED_FRONTIER) + 1) * len(SEEDS)} runs.",
        "name: timescales",
        f"stream: {base['stream']}",
        "strategies:",
        "  - sft",
        *(f"  - {_flow(r)}" for r in frontier_rows(EMBEDDED_FRONTIER)),
        *(f"  - {_flow(r)}" for r in rows),
        f"seeds: {_flow(list(SEEDS))}",
        f"jobs: {base.get('jobs', 1)}",
        f"train: {_flow(base['train'])}",
        "tuning:",
        f"  pinned: {{sft: {_flow(base['tuning']['pinned']['sft'])}}}   # sft's tuned rate; the runs score the test items",
        "  pinned_note: \"sft: make bench-tune (configs/bench.yaml); every sweep row at its mechanism's tuned rate\"",
    ]
    return "\n".join(lines) + "\n"


# SmolLM2: configs/bench_real.yaml's model, stream and training, but a constant learning rate. bench_real decays
# the rate to 0 within every task (cosine), so a tier whose period is one task — updating at each task's last
# step — would take its one step at a rate near 0 (6.9e-4 of the peak) and be frozen in all but name; the sweep
# rows and their own sft frontier therefore run at a constant rate (their own experiment, `timescales_real`).
# Points: one task and ∞ for the three mechanisms of bench_real's headline family (layer tiers in the default
# depth order, importance tiers, the CMS memory). Left out on SmolLM2, with the reason: layer tiers' deep_fast
# order and the δ-rule memory (cms-local) — a SmolLM2 run costs ~7 minutes of one core, so every extra row is 20
# minutes of a 2-core machine for its 3 seeds; the δ-rule memory at its tuned θ already takes world to 0.00 at
# the default chunks (bench_real_full's cms-local row). The embedded sweep's best point with a comparison is P = 1
# for both swept mechanisms (docs/findings.md, 2026-12-07); for layer tiers P = 1 updates every tier every step,
# sft's update set (every LoRA weight at every step, here at sft's own rate), so REAL_BEST adds no row.
REAL_POINTS: tuple = (TASK, NEVER)
REAL_MECHANISMS = ("layer_tiers", "importance_tiers", "cms-memory")
REAL_BEST: dict = {}  # mechanism label -> point (an int or TASK / STREAM), from the embedded sweep's table
REAL_RATES: dict = {}  # per-mechanism rates where bench_real's lr does not apply (none among REAL_MECHANISMS)
# sft's frontier beside its 2e-3 row: the sweep rows train a subset of sft's parameters at sft's rate, so they
# learn at most about as much as sft at 2e-3; lower rates bracket them from below (bench_real's cosine frontier
# reaches LA 0.25 at 1e-4). A rate above 2e-3 would bracket nothing here.
REAL_FRONTIER = [1e-4, 3e-4, 1e-3]


def real_config(base_path: Path = REAL_BASE) -> str:
    """``configs/bench_timescales_real.yaml``: the SmolLM2 points and their frontier, bench_real's settings at a
    constant rate."""
    base = yaml.safe_load(base_path.read_text())
    steps = base["train"]["steps_per_task"]
    tasks = trained_tasks(base["stream"], base_path)
    lr = base["train"]["lr"]
    rows = []
    for m in (m for m in MECHANISMS if m.label in REAL_MECHANISMS):
        points = sorted({period(p, steps, tasks) for p in (*REAL_POINTS, *([REAL_BEST[m.label]] if m.label in REAL_BEST
                                                                           else []))}, key=_order)
        rates = {m.rate[0]: REAL_RATES.get(m.label, lr)}
        rows += sweep_rows(steps, tasks, rates, points, (m,))
    kept = {k: base[k] for k in ("seeds", "jobs", "model") if k in base}
    train = {**base["train"], "schedule": "constant"}
    runs = (1 + len(REAL_FRONTIER) + len(rows)) * len(base.get("seeds", []))
    lines = [
        "# GENERATED by `python -m clbench.bench.timescales` from configs/bench_real.yaml: edit the generator, not this file.",
        "# The timescale sweep on SmolLM2 (clbench/bench/timescales.py): " + ", ".join(REAL_MECHANISMS) + " at P = one task "
        + f"({steps} steps) and P = ∞,",
        "# plus its best point of the embedded sweep (REAL_BEST), with bench_real's stream and settings but a constant",
        "# learning rate (under bench_real's per-task cosine a one-task period would update at a rate near 0), so",
        f"# beside them sft at {len(REAL_FRONTIER) + 1} constant rates, their own matched-learning frontier. {runs} runs.",
        "name: timescales_real",
        f"stream: {base['stream']}",
        "strategies:",
        "  - sft",
        *(f"  - {_flow(r)}" for r in frontier_rows(REAL_FRONTIER)),
        *(f"  - {_flow(r)}" for r in rows),
        *(f"{k}: {_flow(v)}" for k, v in kept.items()),
        f"train: {_flow(train)}",
        f"eval: {_flow(base['eval'])}",
    ]
    return "\n".join(lines) + "\n"


def _order(p) -> float:
    return float("inf") if p == NEVER else float(p)


def write(check: bool = False) -> int:
    """Write (or with ``check`` compare) the generated experiment files; returns an exit status."""
    stale = []
    for out, text in ((EMBEDDED_OUT, embedded_config()), (REAL_OUT, real_config())):
        if check:
            if not out.exists() or out.read_text() != text:
                stale.append(out)
        else:
            out.write_text(text)
            print(f"wrote {out.relative_to(ROOT)}")
    for out in stale:
        print(f"{out.relative_to(ROOT)} is not what `python -m clbench.bench.timescales` writes")
    return 1 if stale else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write the timescale sweep's experiment files")
    parser.add_argument("--check", action="store_true", help="compare instead of writing (exit 1 if stale)")
    return write(parser.parse_args(argv).check)


if __name__ == "__main__":
    raise SystemExit(main())

