"""The timescale sweep (clbench/bench/timescales.py, configs/bench_timescales.yaml): the periods of each point,
the exact update counts they give per tier and task, and P = ∞ leaving the slow tiers bitwise unchanged."""

from __future__ import annotations

import pytest
import torch
import yaml

from clbench.bench import timescales
from clbench.config.experiment import TrainConfig
from clbench.config.periods import NEVER
from clbench.train.step import optimizer_step
from clbench.train.strategy import TaskView
from clbench.train.types import UpdateContext
from tests.nested_helpers import begin, make, snapshot, tiny_llama, token_batch

STEPS = 180  # configs/bench.yaml's task length: the default stream's two trained tasks are global steps 1-180, 181-360

# updates per tier in task 1 and in task 2 for each point's periods [1, round(√P), P] on the global clock,
# counted by hand (multiples of each period in 1..180 and in 181..360)
COUNTS = {
    1: ([180, 180, 180], [180, 180, 180]),
    4: ([180, 90, 45], [180, 90, 45]),  # [1, 2, 4]
    16: ([180, 45, 11], [180, 45, 11]),  # [1, 4, 16]: 16·11 = 176, 16·22 = 352
    64: ([180, 22, 2], [180, 23, 3]),  # [1, 8, 64]: 64, 128 | 192, 256, 320
    180: ([180, 13, 1], [180, 14, 1]),  # [1, 13, 180]: 13·13 = 169, 13·27 = 351
    360: ([180, 9, 0], [180, 9, 1]),  # [1, 19, 360]: 19·9 = 171, 19·18 = 342; 360 is the stream's last step
    NEVER: ([180, 0, 0], [180, 0, 0]),  # [1, never, never]
}


def shipped_rows() -> dict[str, dict]:
    cfg = yaml.safe_load(timescales.EMBEDDED_OUT.read_text())
    return {r["label"]: r for r in cfg["strategies"] if isinstance(r, dict)}


def test_the_shipped_sweep_config_is_what_the_generator_writes():
    assert timescales.write(check=True) == 0


def test_each_point_has_geometric_tiers_ending_at_its_period():
    rows = shipped_rows()
    expect = {1: [1, 1, 1], 4: [1, 2, 4], 16: [1, 4, 16], 64: [1, 8, 64], 180: [1, 13, 180], 360: [1, 19, 360],
              NEVER: [1, NEVER, NEVER]}
    for m in timescales.MECHANISMS:
        for p, periods in expect.items():
            row = rows[timescales.point_label(m.label, p)]
            assert row["options"][m.field] == periods
            assert row["options"].get("clock", "global") == "global"


def test_every_row_of_the_sweep_passes_its_strategys_plan_check():
    """A chunk that never completes is refused before a run writes anything: P = the stream must fit."""
    from clbench.config.experiment import load_config
    from clbench.run.plan import check_entry, plan, run_plan

    cfg = load_config(timescales.EMBEDDED_OUT)
    stream, entries = plan(cfg)
    assert run_plan(cfg, stream).total_steps == 2 * STEPS
    for entry in entries:
        check_entry(entry, cfg, stream)


def _fake_step(s, model, opt, step: int, global_step: int) -> None:
    """One step of the strategy's schedule with made-up gradients (every parameter it asks for)."""
    s.before_step(step)
    names = s.grad_names(step)
    grads = {n: torch.full_like(p, 1e-3) for n, p in s.trainable.items() if names is None or n in names}

    def apply(applied, total_norm=None, clip=True):
        return s.backend.apply_gradients(opt, model, s.trainable, applied, 1e-3, 0.0, total_norm)

    s.apply_update(UpdateContext(step, global_step, grads, 1e-3, 0.0, apply))
    s.backend.clear_gradients(s.trainable)


def _counts_over_two_tasks(name: str, options: dict) -> list[list[int]]:
    s, model = make(name, options, train=TrainConfig(steps_per_task=STEPS))
    out = []
    for task in (1, 2):
        opt = torch.optim.SGD(s.backend.param_groups(s, 1e-3), lr=1e-3)
        begin(s, model, task)
        for step in range(1, STEPS + 1):
            _fake_step(s, model, opt, step, (task - 1) * STEPS + step)
        s.after_task(TaskView(task, f"task{task}", ()), model)
        out.append([t["updates"] for t in s.diagnostics()["tiers"]["tiers"]])
    return out


@pytest.mark.parametrize("mechanism", ["layer_tiers", "layer_tiers-deep", "cms-memory"])
def test_every_point_updates_each_tier_exactly_as_counted_by_hand(mechanism):
    rows = shipped_rows()
    for p, (first, second) in COUNTS.items():
        row = rows[timescales.point_label(mechanism, p)]
        assert _counts_over_two_tasks(row["name"], row["options"]) == [first, second], f"P = {p}"


def test_importance_tiers_at_p_infinity_update_the_slow_tiers_only_in_each_warm_up():
    row = shipped_rows()[timescales.point_label("importance_tiers", NEVER)]
    assert _counts_over_two_tasks(row["name"], row["options"]) == [[180, 20, 20], [180, 20, 20]]


def test_skip_on_the_global_clock_counts_the_stream_step_and_checks_it_against_the_runner():
    s, model = make("layer_tiers", {"clock": "global", "frequencies": [1, 3, 7]}, train=TrainConfig(steps_per_task=5))
    opt = torch.optim.SGD(s.backend.param_groups(s, 1e-3), lr=1e-3)
    steps = []
    for task in (1, 2):
        begin(s, model, task)
        for step in range(1, 6):
            _fake_step(s, model, opt, step, (task - 1) * 5 + step)
        s.after_task(TaskView(task, f"task{task}", ()), model)
        steps.append([t["steps"] for t in s.diagnostics()["tiers"]["tiers"]])
    assert steps == [[[1, 2, 3, 4, 5], [3], []], [[6, 7, 8, 9, 10], [6, 9], [7]]]
    begin(s, model, 3)
    with pytest.raises(RuntimeError, match="global step 99"):
        s.before_step(1)
        _fake_step(s, model, opt, 1, 99)  # a runner whose count disagrees (e.g. a resume that lost a task)


@pytest.mark.parametrize("name, options, fast", [
    ("layer_tiers", {"clock": "global", "frequencies": [1, NEVER, NEVER]}, ".layers.0."),
    ("layer_tiers", {"clock": "global", "order": "deep_fast", "frequencies": [1, NEVER, NEVER]}, ".layers.2."),
    ("cms", {"form": "memory", "chunk_sizes": [1, NEVER, NEVER]}, ".levels.0."),
    ("cms_local", {"chunk_unit": "steps", "chunk_sizes": [1, NEVER, NEVER]}, ".levels.0."),
])
def test_p_infinity_leaves_the_slow_tiers_bitwise_unchanged_and_without_optimizer_state(name, options, fast):
    train = TrainConfig(steps_per_task=4, lr=1e-2, weight_decay=0.1)
    s, model = make(name, options, model=tiny_llama(layers=3), train=train)  # three blocks: one per tier
    frozen = {n for n in s.trainable if fast not in n}
    assert frozen and len(frozen) < len(s.trainable)
    start = snapshot(s.trainable)
    for task in (1, 2):
        opt = s.backend.make_optimizer(s, model, train)
        begin(s, model, task)
        for step in range(1, 5):
            g = (task - 1) * 4 + step
            optimizer_step(s, model, opt, [token_batch(g)], step, g, train.lr, 1.0)
        s.after_task(TaskView(task, f"task{task}", ()), model)
        moved = [n for n in s.trainable if not torch.equal(s.trainable[n], start[n])]
        assert moved and not set(moved) & frozen  # the fast tier learned; nothing slow moved, not even by decay
        assert not any(s.trainable[n] in opt.state for n in frozen)  # and never reached the optimizer

