"""The classic baselines: their mechanisms act, they run end to end in the grid, and they resume exactly."""

from __future__ import annotations

import io
import json
import shutil
from contextlib import redirect_stdout

import pytest
import torch
from safetensors.torch import load_file

from clbench.backends.torch_backend import TorchBackend
from clbench.bench.crosscheck.digits import load_split_digits
from clbench.bench.crosscheck.loop import collate
from clbench.bench.crosscheck.model import DigitsMLP
from clbench.config.experiment import TrainConfig
from clbench.errors import ConfigError
from clbench.train import registry
from clbench.train.replay_buffer import BalancedBuffer, ReservoirBuffer, draw
from clbench.train.strategy import TaskView
from tests.conftest import micro_config

BASELINES = ["replay", "ewc", "lwf", "l2", "olora", "joint", "frozen"]


def make(name: str, **options):
    cls = registry.get(name)
    return cls(cls.options_from(options, name), seed=0, train=TrainConfig(), backend=TorchBackend())


def records(task: str, n: int) -> tuple[dict, ...]:
    return tuple({"text": f"{task} record {i}", "task": task} for i in range(n))


# --- registry and options ----------------------------------------------------------------------------

def test_every_baseline_is_registered_and_listed():
    from clbench.cli import main

    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["list"]) == 0
    listed = {line.split(":")[0] for line in out.getvalue().splitlines() if not line.startswith(" ")}
    assert set(BASELINES) <= set(registry.names())
    assert set(BASELINES) <= listed
    assert "buffer_size" in out.getvalue() and "lambda_orth" in out.getvalue()


@pytest.mark.parametrize("name,options,field", [
    ("replay", {"ratio": -1.0}, "replay.ratio"),
    ("replay", {"policy": "fifo"}, "policy"),
    ("ewc", {"fisher_batches": 0}, "ewc.fisher_batches"),
    ("olora", {"mode": "full"}, "olora.mode"),
    ("lwf", {"temprature": 2.0}, "temperature"),
])
def test_bad_options_name_the_field(name, options, field):
    with pytest.raises(ConfigError, match=field):
        make(name, **options)


def test_olora_refuses_a_kept_optimizer_when_the_grid_is_planned(tmp_path, micro_stream):
    from clbench.config.experiment import StrategySpec
    from clbench.run.plan import resolve_entry

    cfg = micro_config(tmp_path, train={"reset_optimizer": "false"})
    with pytest.raises(ConfigError, match=r"strategies\[olora-kept\]\.train\.reset_optimizer"):
        resolve_entry(StrategySpec("olora", label="olora-kept"), cfg, micro_stream)
    resolve_entry(StrategySpec("olora", train={"reset_optimizer": True}), cfg, micro_stream)  # the row's own choice


def test_lora_baselines_share_sft_lora_options():
    from clbench.modeling.lora import LoraOptions

    for name in ["replay", "ewc", "lwf", "l2", "olora", "joint"]:
        assert issubclass(registry.get(name).Options, LoraOptions), name


# --- replay buffer -------------------------------------------------------------------------------------

def test_balanced_buffer_splits_capacity_equally_and_keeps_each_tasks_own_records():
    buf = BalancedBuffer(capacity=61, seed=3)
    buf.add("a", records("a", 100))
    assert buf.counts() == {"a": 61}
    buf.add("b", records("b", 50))
    assert buf.counts() == {"a": 31, "b": 30}
    buf.add("c", records("c", 10))
    assert buf.counts() == {"a": 21, "b": 20, "c": 10}
    assert len(buf) == 51  # c has only 10 records; its unused share is not handed to the others
    for task, group in buf.groups.items():
        assert all(r["task"] == task for r in group)
        assert len({r["text"] for r in group}) == len(group)  # no duplicates


def test_balanced_buffer_shrinks_groups_to_a_prefix_of_their_random_order():
    buf = BalancedBuffer(capacity=40, seed=0)
    buf.add("a", records("a", 100))
    first = list(buf.groups["a"])
    buf.add("b", records("b", 100))
    assert buf.groups["a"] == first[:20]
    assert first != list(records("a", 100))[:40]  # a random subset, not the first records


def test_reservoir_buffer_respects_capacity_and_keeps_earlier_tasks():
    buf = ReservoirBuffer(capacity=100, seed=0)
    buf.add("a", records("a", 1000))
    assert buf.counts() == {"a": 100}
    buf.add("b", records("b", 1000))
    counts = buf.counts()
    assert len(buf) == 100 and sum(counts.values()) == 100
    assert 30 <= counts["a"] <= 70  # each record survives with probability 100/2000: about half are a's
    with pytest.raises(ValueError):
        buf.add("a", records("a", 1))


def test_buffers_resume_from_state_dict():
    for cls in (ReservoirBuffer, BalancedBuffer):
        a, b = cls(50, seed=1), cls(50, seed=1)
        a.add("x", records("x", 80))
        b.load_state_dict(torch_roundtrip(a.state_dict()))
        a.add("y", records("y", 80))
        b.add("y", records("y", 80))
        assert a.records() == b.records(), cls.__name__


def torch_roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_draw_oversamples_evenly():
    pool = [{"i": i} for i in range(10)]
    few = draw(pool, 7, "s")
    assert len(few) == 7 and len({r["i"] for r in few}) == 7
    many = draw(pool, 25, "s")
    counts = [sum(r["i"] == i for r in many) for i in range(10)]
    assert sorted(set(counts)) == [2, 3] and sum(counts) == 25
    assert draw(pool, 0, "s") == [] and draw([], 5, "s") == []


# --- replay and joint strategies -----------------------------------------------------------------------

def test_replay_mixes_earlier_training_records_at_the_ratio():
    s = make("replay", buffer_size=30, ratio=0.5)
    general = TaskView(0, "general", records("general", 40), pretrained=True)
    medical = TaskView(1, "medical", records("medical", 20))
    notes = TaskView(2, "notes", records("notes", 20))
    s.observe_pretrained(general)
    first = s.training_examples(medical)
    assert first[:20] == list(medical.examples)
    assert len(first) == 30 and all(r["task"] == "general" for r in first[20:])
    s.after_task(medical, None)
    assert s.buffer.counts() == {"general": 15, "medical": 15}
    second = s.training_examples(notes)
    assert second[:20] == list(notes.examples) and len(second) == 30
    assert {r["task"] for r in second[20:]} <= {"general", "medical"}
    assert all(r in s.buffer.records() for r in second[20:])


def test_replay_without_pretrained_data_starts_empty():
    s = make("replay", replay_pretrained=False, ratio=1.0)
    s.observe_pretrained(TaskView(0, "general", records("general", 40), pretrained=True))
    medical = TaskView(1, "medical", records("medical", 20))
    assert s.training_examples(medical) == list(medical.examples)


def test_replay_state_restores_the_buffer_and_later_pretrained_tasks():
    a = make("replay", buffer_size=30)
    t0, g1, t2 = (TaskView(0, "a", records("a", 20)), TaskView(1, "g", records("g", 20), pretrained=True),
                  TaskView(2, "b", records("b", 20)))
    a.after_task(t0, None)
    state = torch_roundtrip(a.state_dict())
    a.observe_pretrained(g1)
    b = make("replay", buffer_size=30)  # a resumed run: observes g, then loads the state saved after t0
    b.observe_pretrained(g1)
    b.load_state_dict(state)
    assert b.buffer.counts() == a.buffer.counts() == {"a": 15, "g": 15}
    assert b.training_examples(t2) == a.training_examples(t2)


def test_a_replay_state_of_another_capacity_is_refused_naming_both():
    """A run resumed with another buffer_size must not silently adopt (or truncate) the stored buffer."""
    saved = make("replay", buffer_size=30)
    saved.after_task(TaskView(1, "a", records("a", 40)), None)
    state = torch_roundtrip(saved.state_dict())
    for other in (make("replay", buffer_size=50), make("replay", buffer_size=30, policy="reservoir")):
        with pytest.raises(ValueError, match="balanced buffer of 30 records; this run uses a (balanced buffer of 50|"
                                             "reservoir buffer of 30)"):
            other.load_state_dict(state)
    same = make("replay", buffer_size=30)
    same.load_state_dict(state)
    assert same.buffer.counts() == {"a": 30}


def test_joint_trains_on_the_union_of_tasks_so_far():
    s = make("joint")
    g, m, n = (TaskView(0, "general", records("general", 5), pretrained=True),
               TaskView(1, "medical", records("medical", 3)), TaskView(2, "notes", records("notes", 4)))
    s.observe_pretrained(g)
    assert s.training_examples(m) == list(g.examples) + list(m.examples)
    s.after_task(m, None)
    assert s.training_examples(n) == list(g.examples) + list(m.examples) + list(n.examples)
    fresh = make("joint")
    fresh.load_state_dict(torch_roundtrip(s.state_dict()))
    assert fresh.training_examples(n) == s.training_examples(n)
    assert make("joint", include_pretrained=False).training_examples(m) == list(m.examples)


# --- regularisers on a real module (the digits MLP: fast, and the API is model-agnostic) ---------------

def _mlp_task(strategy_name, **options):
    torch.manual_seed(0)
    s = make(strategy_name, mode="full", **options)
    model = s.prepare_model(DigitsMLP(hidden=16))
    s.mark_trainable(model)
    exp = load_split_digits().experiences[0]
    batches = [collate(list(exp.train[i:i + 32])) for i in range(0, 96, 32)]
    view = TaskView(0, exp.name, exp.train)
    return s, model, view, batches


def _shift(model, scale: float):
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.add_(scale * torch.linspace(-1, 1, p.numel()).reshape(p.shape) * (i + 1))


def test_ewc_penalty_is_zero_at_the_anchor_and_quadratic_away_from_it():
    s, model, view, batches = _mlp_task("ewc", lam=7.0, fisher_batches=2)
    s.before_task(view, model)
    for b in batches:
        s.loss(model, b)
    s.after_task(view, model)
    (term,) = s.terms
    assert set(term["fisher"]) == set(s.trainable)
    assert float(s.penalty().detach()) == 0.0
    fisher = {n: f for n, f in term["fisher"].items()}
    expected_fisher = per_sample_fisher(s, model, batches[-2:])  # the 64 samples of the last 2 batches
    assert all(torch.allclose(fisher[n], expected_fisher[n], rtol=1e-5, atol=1e-12) for n in fisher)
    _shift(model, 0.01)
    p1 = float(s.penalty().detach())
    manual = 3.5 * sum(float((fisher[n] * (p.detach() - term["anchor"][n]).pow(2)).sum()) for n, p in s.trainable.items())
    assert p1 == pytest.approx(manual, rel=1e-5) and p1 > 0
    _shift(model, 0.01)
    assert float(s.penalty().detach()) == pytest.approx(4 * p1, rel=1e-4)
    out = s.loss(model, batches[0])
    assert out.logs["ewc_penalty"] == pytest.approx(4 * p1, rel=1e-4)


def test_online_ewc_keeps_one_decayed_term():
    s, model, view, batches = _mlp_task("ewc", online=True, gamma=0.5, fisher_batches=1)
    for _ in range(2):
        s.before_task(view, model)
        s.loss(model, batches[0])
        s.after_task(view, model)
    (term,) = s.terms
    f = per_sample_fisher(s, model, batches[:1])
    assert all(torch.allclose(term["fisher"][n], 1.5 * f[n], rtol=1e-5, atol=1e-12) for n in f)  # 0.5·F + F


def per_sample_fisher(s, model, batches) -> dict:
    """Kirkpatrick's empirical Fisher by hand: the mean over samples of each sample's squared gradient."""
    total = {n: torch.zeros_like(p) for n, p in s.trainable.items()}
    count = 0
    for b in batches:
        for i in range(len(b["labels"])):
            loss = model(**{k: v[i:i + 1] for k, v in b.items()}).loss
            for n, g in zip(s.trainable, torch.autograd.grad(loss, list(s.trainable.values()))):
                total[n] += g.pow(2)
            count += 1
    return {n: t / count for n, t in total.items()}


def test_ewc_batch_fisher_is_the_squared_batch_mean_gradient_and_differs_from_the_sample_fisher():
    """``fisher: batch`` (Avalanche's estimator) is the mean over batches of the squared batch-mean
    gradient; on batches of 32 it is not the per-sample Fisher (1/32 of it were samples uncorrelated)."""
    runs = {}
    for estimator in ("batch", "sample"):
        s, model, view, batches = _mlp_task("ewc", fisher_batches=2, fisher=estimator)
        s.before_task(view, model)
        for b in batches:
            s.loss(model, b)
        s.after_task(view, model)
        runs[estimator] = (s, model, batches, s.terms[0]["fisher"])
    s, model, batches, batch_fisher = runs["batch"]
    for n, p in s.trainable.items():
        want = sum(torch.autograd.grad(model(**b).loss, [p])[0].pow(2) for b in batches[-2:]) / 2
        assert torch.allclose(batch_fisher[n], want, rtol=1e-5, atol=1e-12), n
    sample_fisher = runs["sample"][3]
    ratio = sum(float(f.sum()) for f in sample_fisher.values()) / sum(float(f.sum()) for f in batch_fisher.values())
    assert ratio > 2  # the per-sample expectation exceeds the squared mean (2.5× here: gradients agree in part)


def test_l2_penalty_is_zero_at_the_anchor():
    s, model, view, batches = _mlp_task("l2", lam=2.0)
    s.before_task(view, model)
    assert s.loss(model, batches[0]).logs["l2_penalty"] == 0.0
    anchor = {n: p.detach().clone() for n, p in s.trainable.items()}
    _shift(model, 0.01)
    expected = 2.0 * sum(float((p.detach() - anchor[n]).pow(2).sum()) for n, p in s.trainable.items())
    assert s.loss(model, batches[0]).logs["l2_penalty"] == pytest.approx(expected, rel=1e-5)


# --- LwF and O-LoRA on the micro language model ----------------------------------------------------------

def _lm_batch(tok):
    from clbench.data.encoding import collate as lm_collate
    from clbench.data.encoding import encode_example

    recs = [{"prompt": "Question: Where is the cat?\nAnswer:", "completion": " on the mat"},
            {"text": "The weather in the valley is mild."}]
    return lm_collate([encode_example(tok, r, 64) for r in recs], tok.pad_token_id)


def test_lwf_loss_is_the_task_loss_while_the_model_is_its_teacher(micro_model):
    model, tok = micro_model
    s = make("lwf", distill_weight=1.0, temperature=2.0)
    model = s.prepare_model(model)
    s.mark_trainable(model)
    batch = _lm_batch(tok)
    view = TaskView(1, "medical", ())
    s.before_task(view, model)
    out = s.loss(model, batch)
    assert out.logs["lwf_kd"] == 0.0
    assert torch.equal(out.loss, model(**batch).loss)
    with torch.no_grad():
        for p in s.trainable.values():
            p.add_(0.05 * torch.randn_like(p))
    moved = s.loss(model, batch)
    assert moved.logs["lwf_kd"] > 0
    assert float(moved.loss) == pytest.approx(float(model(**batch).loss) + moved.logs["lwf_kd"], rel=1e-5)


def test_lwf_distils_only_non_padding_positions_with_an_explicit_t_squared(micro_model):
    """The logged KD term is the KL averaged over the batch's attention mask, computed here from the
    teacher's and the student's logits; averaging over padded positions too gives another number.
    ``t_squared: false`` is the same term without Hinton's T² (Li & Hoiem's λ_o·KL)."""
    from clbench.train.penalties import distillation_kl

    model, tok = micro_model
    batch = _lm_batch(tok)
    mask = batch["attention_mask"]
    assert 0 < int(mask.sum()) < mask.numel()  # the two records differ in length: there is padding
    logged = {}
    for t_squared in (True, False):
        torch.manual_seed(0)
        s = make("lwf", distill_weight=1.0, temperature=2.0, t_squared=t_squared)
        lm = s.prepare_model(copy_model(model))
        s.mark_trainable(lm)
        s.before_task(TaskView(1, "medical", ()), lm)
        with torch.no_grad():
            teacher = lm(**batch).logits
            for p in s.trainable.values():
                p.add_(0.05 * torch.randn_like(p))
        out = s.loss(lm, batch)
        with torch.no_grad():
            student = lm(**batch).logits
        logged[t_squared] = out.logs["lwf_kd"]
        want = distillation_kl(student, teacher, 2.0, mask, t_squared)
        unmasked = distillation_kl(student, teacher, 2.0, None, t_squared)
        assert logged[t_squared] == pytest.approx(float(want), rel=1e-5)
        assert abs(float(unmasked) - float(want)) > 1e-3 * float(want)
        assert float(out.loss) == pytest.approx(float(lm(**batch).loss) + logged[t_squared], rel=1e-5)
    assert logged[True] == pytest.approx(4.0 * logged[False], rel=1e-5)  # T² = 4


def copy_model(model):
    import copy

    return copy.deepcopy(model)


def test_lwf_without_first_task_teacher_distils_only_from_the_second_task(micro_model):
    model, tok = micro_model
    s = make("lwf", first_task_teacher=False)
    model = s.prepare_model(model)
    s.mark_trainable(model)
    s.before_task(TaskView(1, "medical", ()), model)
    assert s.teacher is None and "lwf_kd" not in s.loss(model, _lm_batch(tok)).logs
    s.after_task(TaskView(1, "medical", ()), model)
    resumed = make("lwf", first_task_teacher=False)
    resumed.trainable = s.trainable
    resumed.load_state_dict(torch_roundtrip(s.state_dict()))
    resumed.before_task(TaskView(2, "notes", ()), model)
    assert resumed.teacher is not None


def test_olora_trains_only_the_newest_adapter(micro_model):
    model, tok = micro_model
    s = make("olora", lora={"rank": 4, "alpha": 8.0})
    model = s.prepare_model(model)
    s.mark_trainable(model)
    s.before_task(TaskView(1, "medical", ()), model)
    assert all(".default." in n for n in s.trainable)
    assert s.loss(model, _lm_batch(tok)).logs["olora_orth"] == 0.0  # no earlier adapter yet
    s.after_task(TaskView(1, "medical", ()), model)
    s.before_task(TaskView(2, "notes", ()), model)
    assert s.current == "task2" and all(".task2." in n for n in s.trainable)
    groups = s.backend.param_groups(s, 1e-3)
    assert {id(p) for g in groups for p in g["params"]} == {id(p) for p in s.trainable.values()}
    assert model.base_model.active_adapters == ["default", "task2"]
    assert s.loss(model, _lm_batch(tok)).logs["olora_orth"] > 0


def test_olora_with_two_earlier_adapters_penalises_both_and_trains_neither(micro_model):
    """Task 3 of O-LoRA: the orthogonality term is Σ_layers Σ_old Σ |A_old · A_newᵀ| over *both* earlier
    adapters (by hand here), only the newest adapter trains, and the two earlier ones stay bitwise as
    they were through task 3's optimizer steps."""
    model, tok = micro_model
    s = make("olora", lora={"rank": 4, "alpha": 8.0})
    model = s.prepare_model(model)
    s.mark_trainable(model)
    batch = _lm_batch(tok)
    for index, name in ((1, "medical"), (2, "notes")):
        s.before_task(TaskView(index, name, ()), model)
        opt = torch.optim.SGD(s.backend.param_groups(s, 0.5), lr=0.5)
        for _ in range(2):  # move each adapter away from its initial values
            opt.zero_grad()
            s.loss(model, batch).loss.backward()
            opt.step()
        s.after_task(TaskView(index, name, ()), model)
    s.before_task(TaskView(3, "third", ()), model)
    assert s.finished == ["default", "task2"] and s.current == "task3"
    assert s.trainable and all(".task3." in n for n in s.trainable)

    def lora_a(adapter):
        return {n.replace(f".lora_A.{adapter}.weight", ""): p for n, p in model.named_parameters()
                if n.endswith(f".lora_A.{adapter}.weight")}

    new, old = lora_a("task3"), [lora_a("default"), lora_a("task2")]
    assert len(new) > 0 and all(o.keys() == new.keys() for o in old)
    by_hand = sum(float((o[k].detach() @ new[k].detach().T).abs().sum()) for o in old for k in new)
    one_only = sum(float((old[-1][k].detach() @ new[k].detach().T).abs().sum()) for k in new)
    out = s.loss(model, batch)
    assert out.logs["olora_orth"] == pytest.approx(by_hand, rel=1e-5)
    assert by_hand > 1.5 * one_only
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if ".default." in n or ".task2." in n}
    assert frozen and not any(p.requires_grad for n, p in model.named_parameters() if n in frozen)
    opt = torch.optim.SGD(s.backend.param_groups(s, 0.5), lr=0.5)
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)


# --- end to end: every baseline through the runner, then a resume ---------------------------------------

@pytest.fixture(scope="module")
def grid_runs(tmp_path_factory, micro_cache, micro_base_dir):
    from clbench.run.grid import run_grid

    root = tmp_path_factory.mktemp("baselines")
    cfg = micro_config(root, cache_dir=micro_cache, strategies=f"[{','.join(BASELINES)}]")
    results = run_grid(cfg, progress=False, echo=lambda *a: None)
    return cfg, {d.parent.name: d for d, _ in results}, [s for _, s in results]


def _log(run, t):
    return [json.loads(x) for x in (run / "train_log" / f"task_{t}.jsonl").read_text().splitlines()]


def test_every_baseline_runs_through_the_grid(grid_runs):
    cfg, runs, statuses = grid_runs
    assert statuses == ["done"] * len(BASELINES)
    steps = cfg.train.steps_per_task
    for name, run in runs.items():
        metrics = json.loads((run / "metrics.json").read_text())
        assert (run / "DONE").exists(), name
        assert metrics["cost"]["optimizer_steps"] == (0 if name == "frozen" else 2 * steps), name
    # each mechanism left its trace in the real runner's log (task 2 = notes, the second trained task)
    ewc = _log(runs["ewc"], 2)  # the first step of a task starts at its anchor
    assert ewc[0]["ewc_penalty"] == 0.0 and all(r["ewc_penalty"] > 0 for r in ewc[1:])
    assert "ewc_penalty" not in _log(runs["ewc"], 1)[0]  # no earlier task, no penalty term
    assert all(r["lwf_kd"] >= 0 for r in _log(runs["lwf"], 1)) and any(r["lwf_kd"] > 0 for r in _log(runs["lwf"], 2))
    assert _log(runs["l2"], 1)[0]["l2_penalty"] == 0.0 and _log(runs["l2"], 2)[-1]["l2_penalty"] > 0
    assert all(r["olora_orth"] == 0.0 for r in _log(runs["olora"], 1))
    assert all(r["olora_orth"] > 0 for r in _log(runs["olora"], 2))
    replay_diag = json.loads((runs["replay"] / "eval" / "after_2.json").read_text())["diagnostics"]
    assert replay_diag["buffer"] == {"general": 67, "medical": 36, "notes": 36}
    joint_diag = json.loads((runs["joint"] / "eval" / "after_2.json").read_text())["diagnostics"]
    assert set(joint_diag["union_records"]) == {"general", "medical", "notes"}


def test_frozen_is_the_base_model(grid_runs):
    _, runs, _ = grid_runs
    run = runs["frozen"]
    base = json.loads((run / "eval" / "base.json").read_text())["scores"]
    for t in (1, 2):
        after = json.loads((run / "eval" / f"after_{t}.json").read_text())
        assert after["scores"] == base and after["updated_elements"] == 0
    assert json.loads((run / "metrics.json").read_text())["cost"]["trainable_parameters"] == 0
    assert load_file(run / "checkpoints" / "task_1" / "adapter.safetensors") == {}


def test_olora_earlier_adapter_is_bitwise_unchanged_by_the_next_task(grid_runs):
    _, runs, _ = grid_runs
    after_medical = load_file(runs["olora"] / "checkpoints" / "task_1" / "adapter.safetensors")
    after_notes = load_file(runs["olora"] / "checkpoints" / "task_2" / "adapter.safetensors")
    old = [n for n in after_medical if ".default." in n]
    assert old and set(after_medical) == set(old)
    assert all(torch.equal(after_medical[n], after_notes[n]) for n in old)
    new = [n for n in after_notes if ".task2." in n]
    assert len(new) == len(old)
    assert any(not torch.equal(after_notes[n], after_notes[n.replace(".task2.", ".default.")]) for n in new)


def test_every_baseline_resumes_to_the_same_result(grid_runs):
    from clbench.run.grid import run_grid

    cfg, runs, _ = grid_runs
    kept = {}
    for name, run in runs.items():
        kept[name] = (load_file(run / "checkpoints" / "task_2" / "adapter.safetensors"),
                      json.loads((run / "eval" / "after_2.json").read_text())["scores"])
        (run / "eval" / "after_2.json").unlink()  # as if the run was killed while training 'notes'
        (run / "DONE").unlink()
        shutil.rmtree(run / "checkpoints" / "task_2")
    statuses = [s for _, s in run_grid(cfg, progress=False, echo=lambda *a: None)]
    assert statuses == ["resumed"] * len(BASELINES)
    for name, run in runs.items():
        tensors, scores = kept[name]
        again = load_file(run / "checkpoints" / "task_2" / "adapter.safetensors")
        assert set(again) == set(tensors), name
        assert all(torch.equal(again[n], tensors[n]) for n in tensors), name
        assert json.loads((run / "eval" / "after_2.json").read_text())["scores"] == scores, name
