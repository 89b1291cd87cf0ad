"""The Avalanche cross-check: same stream, same estimators, same hooks, and agreement within tolerance."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from clbench.backends.torch_backend import TorchBackend
from clbench.bench.crosscheck import CrossCheckConfig, render_table, run_crosscheck
from clbench.bench.crosscheck.digits import avalanche_benchmark, load_split_digits
from clbench.bench.crosscheck.loop import LoopConfig, collate, train_clbench
from clbench.bench.crosscheck.model import DigitsMLP, LogitsOnly
from clbench.config.experiment import TrainConfig
from clbench.strategies.sft import SFT
from clbench.train import registry
from clbench.train.penalties import diagonal_fisher
from clbench.train.replay_buffer import BalancedBuffer


@pytest.fixture(scope="module")
def stream():
    return load_split_digits()


@pytest.fixture(scope="module")
def results():
    torch.set_num_threads(1)
    cfg = CrossCheckConfig()
    return cfg, run_crosscheck(cfg)


def test_split_digits_is_class_incremental_and_identical_on_both_sides(stream):
    exps = stream.experiences
    assert [e.classes for e in exps] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    ids = [r["id"] for e in exps for r in e.train]
    assert sorted(ids) == list(range(len(stream.train_y)))  # every training sample exactly once
    assert all({r["y"] for r in e.train} == set(e.classes) for e in exps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bench = avalanche_benchmark(stream)
    row_id = {tuple(stream.train_x[i].tolist()): i for i in range(len(stream.train_x))}
    for ours, theirs in zip(exps, bench.train_stream):
        their_ids = sorted(row_id[tuple(x.tolist())] for x, *_ in theirs.dataset)
        assert their_ids == sorted(r["id"] for r in ours.train)
    for ours, theirs in zip(exps, bench.test_stream):
        xs = torch.stack([x for x, *_ in theirs.dataset])
        assert len(xs) == len(ours.test_x) and set(map(tuple, xs.tolist())) == set(map(tuple, ours.test_x.tolist()))


def test_fisher_equals_avalanches_ewc_importances(stream):
    from avalanche.training.plugins import EWCPlugin

    torch.manual_seed(0)
    mlp = DigitsMLP(hidden=32)
    net = LogitsOnly(mlp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exp = next(iter(avalanche_benchmark(stream).train_stream))
    theirs = EWCPlugin(ewc_lambda=1.0).compute_importances(
        net, torch.nn.CrossEntropyLoss(), torch.optim.SGD(net.parameters(), lr=0.1), exp.dataset, "cpu", 32)
    data = [(x, int(y)) for x, y, *_ in exp.dataset]  # Avalanche's order: sequential batches of 32
    batches = [{"x": torch.stack([x for x, _ in data[i:i + 32]]), "labels": torch.tensor([y for _, y in data[i:i + 32]])}
               for i in range(0, len(data), 32)]
    params = dict(mlp.named_parameters())
    ours = diagonal_fisher(params, (mlp(**b).loss for b in batches))
    for name in params:
        assert torch.allclose(ours[name], theirs[f"mlp.{name}"].data, rtol=1e-5, atol=1e-9), name


def test_balanced_buffer_shares_equal_avalanches_experience_balanced_buffer():
    from avalanche.training.storage_policy import ExperienceBalancedBuffer

    theirs = ExperienceBalancedBuffer(max_size=200, adaptive_size=True)
    ours = BalancedBuffer(200)
    for k in range(1, 6):
        ours.add(f"exp{k}", [{"i": i} for i in range(250)])
        assert list(ours.counts().values()) == theirs.get_group_lengths(k)


class Recording(SFT):
    """sft that records which hook the loop calls, in order."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.calls: list[str] = []

    def prepare_model(self, model):
        self.calls.append("prepare_model")
        return super().prepare_model(model)

    def mark_trainable(self, model):
        self.calls.append("mark_trainable")
        super().mark_trainable(model)

    def param_groups(self):
        self.calls.append("param_groups")
        return super().param_groups()

    def training_examples(self, task):
        self.calls.append("training_examples")
        return super().training_examples(task)

    def before_task(self, task, model):
        self.calls.append("before_task")

    def before_step(self, step):
        self.calls.append("before_step")

    def grad_names(self, step):
        self.calls.append("grad_names")
        return super().grad_names(step)

    def loss(self, model, batch):
        self.calls.append("loss")
        return super().loss(model, batch)

    def apply_update(self, ctx):
        self.calls.append("apply_update")
        return super().apply_update(ctx)

    def after_task(self, task, model):
        self.calls.append("after_task")


def test_loop_calls_the_runners_hooks_in_the_runners_order(stream):
    exps = stream.experiences[:2]
    s = Recording(SFT.Options(mode="full"), seed=0, train=TrainConfig(max_grad_norm=0.0),
                  backend=TorchBackend())
    train_clbench(s, DigitsMLP(hidden=8), exps, LoopConfig(epochs=2, batch_size=64), seed=0)
    steps = [2 * math.ceil(len(e.train) / 64) for e in exps]
    step = ["before_step", "grad_names", "loss", "apply_update"]
    expected = ["prepare_model", "mark_trainable",
                "before_task", "param_groups", "training_examples", *step * steps[0], "after_task",
                "before_task", "training_examples", *step * steps[1], "after_task"]
    assert s.calls == expected


def test_replay_batches_carry_the_memory_in_the_same_number_of_steps(stream):
    from clbench.bench.crosscheck.loop import epoch_batches

    records = list(stream.experiences[1].train)
    gen = torch.Generator().manual_seed(0)
    plain = list(epoch_batches(records, len(records), 32, gen))
    doubled = list(epoch_batches(records + records, len(records), 32, gen))
    assert len(plain) == len(doubled) == math.ceil(len(records) / 32)
    assert sum(len(b["labels"]) for b in doubled) == 2 * len(records)
    assert torch.equal(collate(records[:2])["labels"], torch.tensor([records[0]["y"], records[1]["y"]]))


def test_clbench_agrees_with_avalanche_within_tolerance(results):
    cfg, pairs = results
    by = {r.method: r for r in pairs}
    assert set(by) == {"naive", "ewc", "replay"}
    for r in pairs:
        assert len(r.acc("avalanche")) == len(r.acc("clbench")) == 3
        assert abs(r.difference) <= cfg.tolerance, (r.method, r.acc("avalanche"), r.acc("clbench"))
    # the known result, on both sides: naive forgets nearly everything, replay keeps most of it
    for side in ("avalanche", "clbench"):
        assert max(by["naive"].acc(side)) < 0.3
        assert min(by["replay"].acc(side)) > 0.8
    table = render_table(pairs, cfg)
    assert "| naive | Naive | sft |" in table and "| replay | Replay | replay |" in table


def test_cli_writes_the_table(tmp_path):
    from clbench.cli import main

    assert main(["crosscheck", "--seeds", "0", "-o", str(tmp_path / "cc")]) == 0
    text = (tmp_path / "cc" / "crosscheck.md").read_text()
    assert text.startswith("# clbench vs Avalanche on split digits")
    assert text.count("| yes |") == 3


def test_crosscheck_strategies_come_from_the_registry(stream):
    from clbench.bench.crosscheck.compare import clbench_strategy

    s = clbench_strategy("replay", CrossCheckConfig(), stream, seed=1)
    assert type(s) is registry.get("replay") and s.options.mode == "full" and s.options.ratio == 1.0
    e = clbench_strategy("ewc", CrossCheckConfig(ewc_lambda=50.0), stream, seed=1)
    assert e.options.lam == 100.0 and e.options.fisher_batches == 8 and e.options.fisher == "batch"  # Avalanche's
