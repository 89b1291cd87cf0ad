"""CMS as a memory (clbench.modeling.cms_memory, clbench.eval.memory_view, clbench.train.local_memory,
strategies/cms.py's memory form and strategies/cms_local.py): the global clock across tasks and a resume, the
local rule inside the forward pass, test-time updates on and off, refusal of a chunk that never completes,
Titans' gate, and the split of the two rules into two strategies."""

from __future__ import annotations

import json

import pytest
import torch

from clbench.backends.torch_backend import TorchBackend
from clbench.config.experiment import TrainConfig
from clbench.errors import ConfigError
from clbench.eval.memory_view import TestTimeMemoryView
from clbench.modeling import cms_memory
from clbench.results.files import RunFiles
from clbench.run.one_run import load_checkpoint, save_checkpoint
from clbench.train.step import optimizer_step
from clbench.train.strategy import TaskView
from tests.nested_helpers import begin, make, snapshot, tiny_llama, token_batch, train_step

LOCAL = {"chunk_unit": "tokens"}


def make_optimizer(s, model, train):
    return s.backend.make_optimizer(s, model, train)


def _train_task(s, model, task: int, steps: int, first_global: int):
    opt = make_optimizer(s, model, s.train)
    begin(s, model, task)
    for step in range(1, steps + 1):
        g = first_global + step
        optimizer_step(s, model, opt, [token_batch(g)], step, g, s.train.lr, 1.0)
    s.after_task(TaskView(task, f"task{task}", ()), model)
    return s.diagnostics()


def test_memory_form_starts_as_the_base_model_with_only_the_memory_trainable():
    base = tiny_llama(seed=2)
    s, model = make("cms", {"form": "memory", "chunk_sizes": [1, 4]}, model=tiny_llama(seed=2))
    batch = token_batch(0)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, base(**batch).logits)
    assert s.trainable and all(".memory.levels." in n for n in s.trainable)
    assert all(not p.requires_grad for n, p in model.named_parameters() if n not in s.trainable)
    assert set(s.updater.tier_map.values()) == {0, 1}


def test_global_clock_updates_at_global_multiples_across_a_task_boundary_and_a_resume(tmp_path):
    opts = {"form": "memory", "chunk_sizes": [1, 3, 8], "clock": "global"}
    train = TrainConfig(lr=1e-2)
    # uninterrupted: two tasks of 5 steps (global steps 1-5, 6-10)
    s, model = make("cms", opts, model=tiny_llama(seed=1), train=train)
    first = _train_task(s, model, 1, 5, 0)
    second = _train_task(s, model, 2, 5, 5)
    assert [t["steps"] for t in first["tiers"]["tiers"]] == [[1, 2, 3, 4, 5], [3], []]
    assert [t["steps"] for t in second["tiers"]["tiers"]] == [[6, 7, 8, 9, 10], [6, 9], [8]]
    assert second["tiers"]["clock"] == "global"
    # resumed: task 1, the runner's checkpoint files, a fresh process state, task 2
    r, rmodel = make("cms", opts, model=tiny_llama(seed=1), train=train)
    _train_task(r, rmodel, 1, 5, 0)
    assert r.updater.pending == [0, 2, 5] and r.updater.buffers  # partial chunks open at the boundary
    files, ops = RunFiles(tmp_path / "run"), TorchBackend()
    save_checkpoint(files, 1, r, rmodel, {"task": "task1"}, ops)
    fresh, fmodel = make("cms", opts, model=tiny_llama(seed=1), train=train)
    load_checkpoint(files, 1, fresh, fmodel, ops)
    resumed = _train_task(fresh, fmodel, 2, 5, 5)
    assert [t["steps"] for t in resumed["tiers"]["tiers"]] == [[6, 7, 8, 9, 10], [6, 9], [8]]
    assert all(torch.equal(fresh.trainable[n], s.trainable[n]) for n in s.trainable)  # bit for bit


def test_task_clock_restarts_every_task_and_drops_partial_chunks():
    s, model = make("cms", {"form": "memory", "chunk_sizes": [1, 3], "clock": "task"})
    _train_task(s, model, 1, 5, 0)
    second = _train_task(s, model, 2, 5, 5)
    assert [t["steps"] for t in second["tiers"]["tiers"]] == [[1, 2, 3, 4, 5], [3]]


def _local_with_teach_signal(opts, batch):
    s, model = make("cms_local", {**LOCAL, **opts}, model=tiny_llama(seed=4))
    begin(s, model)
    s.loss(model, batch).loss.backward()  # the ordinary pass: teach signals land in s.memory.pending
    ((_, deltas),) = s.memory.pending
    return s, model, deltas


def test_local_rule_changes_weights_inside_the_forward_pass_at_chunk_boundaries_only():
    batch = token_batch(3, n=3, length=10)
    s, model, deltas = _local_with_teach_signal({"chunk_sizes": [4], "local_lr": 5.0}, batch)
    memory = s.memories[0]
    seen = []  # (tokens processed when a chunk closed, weights before, weights after)
    close = memory._close_chunk

    def spy(i, position):
        before = snapshot(dict(memory.levels[i].named_parameters()))
        close(i, position)
        seen.append((position, before, snapshot(dict(memory.levels[i].named_parameters()))))

    memory._close_chunk = spy
    frozen = snapshot(dict(model.named_parameters()))
    with torch.no_grad():
        plain = model(**batch).logits
    for m, d in zip(s.memories, deltas):
        m.teach = d
    with torch.no_grad():
        online = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    for m in s.memories:
        m.teach = None
    assert [p for p, _, _ in seen] == [4, 8]  # 10 positions, chunk 4: boundaries after tokens 4 and 8
    for _, before, after in seen:
        assert not torch.equal(before["down.weight"], after["down.weight"])
    assert torch.equal(seen[0][2]["down.weight"], seen[1][1]["down.weight"])  # unchanged between boundaries
    assert torch.equal(seen[0][1]["down.weight"], frozen["model.layers.0.mlp.memory.levels.0.down.weight"])
    # tokens 0-3 were computed before the first boundary: as the frozen model computes them
    assert torch.allclose(online[:, :4], plain[:, :4], rtol=0, atol=1e-6)
    # token 4 on saw the updated weights of every block's memory
    assert (online[:, 4:] - plain[:, 4:]).abs().amax(dim=(0, 2)).min() > 1e-4
    assert memory.chunk_fill == [2] and memory.tokens_seen == 10  # the open chunk carries on


def test_local_chunk_longer_than_a_sequence_sums_its_gradient_across_passes():
    s, model = make("cms_local", {**LOCAL, "chunk_sizes": [5, 25]}, model=tiny_llama(seed=5))
    opt = make_optimizer(s, model, s.train)
    begin(s, model)
    logs = [train_step(s, model, opt, step, [token_batch(step, length=10)]) for step in range(1, 4)]
    first = s.memories[0]
    assert first.tokens_seen == 30 and first.update_positions == [[5, 10, 15, 20, 25, 30], [25]]
    assert all(n > 0 for n in logs)
    d = s.diagnostics()["cms"]["levels"]
    assert [lv["updates"] for lv in d] == [6, 1] and d[1]["gate_hits"] == 4  # four blocks
    assert s.step_log() == {"memory_updates": [8, 4]}  # step 3 (tokens 21-30): level 0 at 25, 30; level 1 at 25


def test_surprise_threshold_gates_updates_and_counts_misses():
    s, model = make("cms_local", {**LOCAL, "chunk_sizes": [5], "surprise_threshold": 1e9}, model=tiny_llama(seed=5))
    opt = make_optimizer(s, model, s.train)
    begin(s, model)
    before = snapshot(s.trainable)
    assert train_step(s, model, opt, 1, [token_batch(1, length=10)]) == 0
    assert all(torch.equal(before[n], p) for n, p in s.trainable.items())
    (level,) = s.diagnostics()["cms"]["levels"]
    assert level["gate_hits"] == 0 and level["gate_misses"] == 8 and level["surprise_mean"] > 0


def test_titans_momentum_and_decay_step():
    torch.manual_seed(0)
    mem = cms_memory.ContinuumMemory(4, 3, 1)
    mem.rule = cms_memory.LocalRule((2,), "tokens", lr=0.5, momentum=0.9, decay=0.1)
    w0 = [p.detach().clone() for p in mem.levels[0].parameters()]
    g1 = [torch.randn_like(p) for p in w0]
    g2 = [torch.randn_like(p) for p in w0]
    mem.grad_sum[0] = [g.clone() for g in g1]
    mem._close_chunk(0, 2)
    mem.grad_sum[0] = [g.clone() for g in g2]
    mem._close_chunk(0, 4)
    for p, w, a, b in zip(mem.levels[0].parameters(), w0, g1, g2):
        s1 = -0.5 * a
        w1 = 0.9 * w + s1
        s2 = 0.9 * s1 - 0.5 * b
        assert torch.allclose(p.detach(), 0.9 * w1 + s2, atol=1e-6)


def _micro_probe_rows(s, model, tok, stream, cfg):
    from clbench.eval.rows import evaluate_row
    from clbench.eval.torch_lm import TorchLM

    with s.probe_view(TorchLM(model, tok, batch_size=cfg.eval.batch_size)) as lm:
        return evaluate_row(lm, stream, cfg.eval, progress=False)["scores"], lm


def test_evaluation_leaves_every_parameter_bitwise_unchanged_with_test_time_updates_on_or_off(
        micro_model, micro_stream, micro_cfg):
    from clbench.data.encoding import batch_stream, encode_example

    model, tok = micro_model
    results = {}
    for tt in (False, True):
        s, m = make("cms_local", {**LOCAL, "chunk_sizes": [4, 32], "local_lr": 2.0, "test_time_updates": tt},
                    model=__import__("copy").deepcopy(model))
        begin(s, m)
        opt = make_optimizer(s, m, s.train)
        task = micro_stream.tasks[1]
        batches = batch_stream([encode_example(tok, r, 32) for r in task.train], 8, tok.pad_token_id, seed=0)
        for step in range(1, 4):
            train_step(s, m, opt, step, [next(batches)])
        params = {n: p.detach().clone() for n, p in m.named_parameters()}
        state = [mm.memory_state() for mm in s.memories]
        scores, lm = _micro_probe_rows(s, m, tok, micro_stream, micro_cfg)
        assert all(torch.equal(params[n], p) for n, p in m.named_parameters())
        assert [mm.memory_state()["tokens_seen"] for mm in s.memories] == [st["tokens_seen"] for st in state]
        assert isinstance(lm, TestTimeMemoryView) == tt
        if tt:
            assert lm.prompt_tokens > 0  # it did learn from the prompts while answering
        assert s.diagnostics()["cms"]["test_time_updates"] is tt
        results[tt] = scores
    assert results[False].keys() == results[True].keys()


def test_a_chunk_that_never_completes_is_refused_before_anything_is_written(micro_cache, micro_base_dir, tmp_path):
    from clbench.run.grid import run_grid
    from tests.conftest import micro_config

    for name, opts in (("cms", "{form: memory, chunk_sizes: [1, 13]}"),  # 2 trained tasks x 6 steps = 12
                       ("cms", "{form: memory, chunk_sizes: [1, 7], clock: task}"),
                       ("cms_local", "{chunk_unit: tokens, chunk_sizes: [8, 100000]}"),
                       ("cms_local", "{chunk_unit: steps, chunk_sizes: [1, 7], clock: task}")):
        cfg = micro_config(tmp_path / "r", cache_dir=micro_cache, strategies=f"[{{name: {name}, options: {opts}}}]")
        with pytest.raises(ConfigError, match="never completes"):
            run_grid(cfg, progress=False, echo=lambda *a: None)
        assert not (tmp_path / "r" / "results").exists() or not any((tmp_path / "r" / "results").rglob("*.json"))


def test_local_run_end_to_end_records_the_memory(micro_cache, micro_base_dir, tmp_path):
    from clbench.run.grid import run_grid
    from tests.conftest import micro_config

    cfg = micro_config(tmp_path, cache_dir=micro_cache, strategies="[{name: cms_local, options: {"
                       "chunk_unit: tokens, chunk_sizes: [8, 64, 256]}}]")
    ((path, status),) = run_grid(cfg, progress=False, echo=lambda *a: None)
    files = RunFiles(path)
    diag = json.loads(files.after(2).read_text())["diagnostics"]["cms"]
    assert status == "done" and diag["update"] == "local" and diag["test_time_updates"] is False
    assert diag["levels"][0]["updates"] > diag["levels"][1]["updates"] > 0
    assert diag["tokens_seen"] > diag["levels"][2]["chunk"]  # the global clock ran across both tasks


def test_option_combinations_that_mean_nothing_are_refused():
    from clbench.train import registry

    cms = registry.get("cms")
    for bad, field in (({"form": "adapter", "mode": "full"}, "mode"), ({"adapter_hidden": 0}, "adapter_hidden")):
        with pytest.raises(ConfigError, match=field):
            cms.options_from(bad, "cms")
    with pytest.raises(ConfigError, match="adapter_hidden"):
        registry.get("cms_local").options_from({"adapter_hidden": 0}, "cms_local")


def test_an_old_local_cms_config_is_refused_naming_cms_local_and_what_to_write():
    """``{name: cms, options: {update: local, ...}}`` was the local rule; it is ``cms_local`` now, and the
    message gives the row to write (the same options without form and update), never a silent change."""
    from clbench.train import registry

    with pytest.raises(ConfigError) as info:
        registry.get("cms").options_from({"form": "memory", "update": "local", "chunk_unit": "tokens",
                                          "chunk_sizes": [16, 256, 8192]}, "strategies[cms-local].options")
    text = str(info.value)
    assert "strategies[cms-local].options.update" in text
    assert '{name: cms_local, options: {"chunk_unit": "tokens", "chunk_sizes": [16, 256, 8192]}}' in text
    # the options written there are cms_local's, as they were
    options = registry.get("cms_local").options_from({"chunk_unit": "tokens", "chunk_sizes": [16, 256, 8192]}, "x")
    assert (options.chunk_unit, options.chunk_sizes, options.local_lr) == ("tokens", (16, 256, 8192), 1.0)


@pytest.mark.parametrize("key,value", [("local_lr", 2.0), ("local_momentum", 0.9), ("local_decay", 0.1),
                                       ("surprise_threshold", 0.1), ("test_time_updates", True),
                                       ("chunk_unit", "tokens")])
def test_cms_has_no_local_rule_its_fields_name_cms_local(key, value):
    from clbench.train import registry

    with pytest.raises(ConfigError, match=rf"x\.{key}: '{key}' belongs to the local δ-rule, which is the strategy "
                                          "cms_local now"):
        registry.get("cms").options_from({"form": "memory", key: value}, "x")


def test_cms_and_cms_local_share_no_rule():
    """cms learns from the outer optimizer only: its memory's weights take the main loss's gradients, and
    nothing in it steps inside the forward pass; cms_local's weights never take one."""
    outer, outer_model = make("cms", {"form": "memory", "chunk_sizes": [1, 4]})
    assert all(m.rule is None for m in cms_memory.find_memories(outer_model)) and not hasattr(outer, "memory")
    assert all(p.requires_grad for p in outer.trainable.values())
    local, model = make("cms_local", {"chunk_sizes": [4]})
    assert all(m.rule is not None for m in cms_memory.find_memories(model))
    assert local.trainable and not any(p.requires_grad for p in local.trainable.values())


def test_stored_cms_results_written_with_the_local_fields_are_still_the_same_experiment(tmp_path):
    """A ``config.json`` of an outer ``cms`` run stores the local fields the options had then (at defaults,
    with no effect): the run is still recognised; a stored ``update: local`` run is not today's ``cms``."""
    from clbench.config.experiment import StrategySpec
    from clbench.config.options import to_dict
    from clbench.run.plan import resolve_entry, stored_options_match
    from tests.conftest import micro_config

    entry = resolve_entry(StrategySpec("cms", {"form": "memory", "chunk_sizes": [1, 16, 256]}), micro_config(tmp_path))
    old = {**to_dict(entry.options), "chunk_unit": "steps", "local_lr": 1.0, "local_momentum": 0.0,
           "local_decay": 0.0, "surprise_threshold": 0.0, "test_time_updates": False}
    assert "local_lr" not in entry.options_dict and stored_options_match(entry, old)
    assert not stored_options_match(entry, {**old, "update": "local", "chunk_unit": "tokens"})
    assert not stored_options_match(entry, {**old, "chunk_sizes": [1, 16, 128]})


@pytest.mark.parametrize("clock", ["global", "task"])
def test_the_local_rule_over_two_tasks_keeps_or_restarts_its_clock(clock):
    """Chunks of 5 and 25 tokens, two tasks of two 10-token steps. On the global clock task 2 continues at
    token 21 (level 0 closes at 25, 30, 35, 40; level 1 at 25, its chunk holding tokens of both tasks); on
    the task clock it starts again at 1 (5, 10, 15, 20; level 1 never closes)."""
    s, model = make("cms_local", {**LOCAL, "chunk_sizes": [5, 25], "clock": clock}, model=tiny_llama(seed=5))
    opt = make_optimizer(s, model, s.train)
    at = []
    for task in (1, 2):
        begin(s, model, task)
        for step in (1, 2):
            train_step(s, model, opt, step, [token_batch(10 * task + step, length=10)])
        s.after_task(TaskView(task, f"task{task}", ()), model)
        at.append([lv["at"] for lv in s.diagnostics()["cms"]["levels"]])
    assert at[0] == [[5, 10, 15, 20], []]
    if clock == "global":
        assert at[1] == [[25, 30, 35, 40], [25]] and s.diagnostics()["cms"]["tokens_seen"] == 40
    else:
        assert at[1] == [[5, 10, 15, 20], []] and s.diagnostics()["cms"]["tokens_seen"] == 20


def test_test_time_learning_memorises_the_prompts_only_never_continuations_or_padding(micro_model):
    """Every memorising pass of the probe view runs the batch's prompts (contexts) — not the continuations
    it then scores, not the generated answers — right-padded, with a teach signal that is exactly zero at the
    padding and, at a prompt's own positions, the gradient of that prompt's next-token loss alone (scaled
    by its share of the batch's predicted tokens): padding is neither input nor target."""
    import copy

    from clbench.eval.torch_lm import TorchLM
    from clbench.modeling.cms_memory import lm_teach_signals

    base, tok = micro_model
    s, model = make("cms_local", {**LOCAL, "chunk_sizes": [4, 32], "local_lr": 2.0, "test_time_updates": True},
                    model=copy.deepcopy(base))
    passes = []  # (input ids, attention mask, each memory's teach signal) of every memorising pass

    def spy(module, args, kwargs):
        if s.memories[0].teach is not None:
            passes.append((kwargs["input_ids"].clone(), kwargs["attention_mask"].clone(),
                           [m.teach.clone() for m in s.memories]))

    model.register_forward_pre_hook(spy, with_kwargs=True)
    contexts = ["The capital of Norland is", "Q: which drug treats the grey fever? A:", "Notes:"]
    pairs = [(c, x) for c in contexts for x in (" Velm", " a long continuation that is scored")]
    with s.probe_view(TorchLM(model, tok, batch_size=8)) as view:
        view.loglikelihood(pairs)
        learned_ll = len(passes)
        view.generate(contexts, max_new_tokens=4)
    assert learned_ll >= 1 and len(passes) > learned_ll
    prompts = {tuple(tok(c)["input_ids"]) for c in contexts}
    for ids, mask, teach in passes:
        rows = [tuple(r[m.bool()].tolist()) for r, m in zip(ids, mask)]
        assert set(rows) <= prompts, rows  # prompts only: no continuation token was memorised
        assert all(r[m.bool()].tolist() == list(r[: int(m.sum())].tolist()) for r, m in zip(ids, mask))  # right-padded
        assert len(set(rows)) > 1 and int((mask == 0).sum()) > 0  # prompts of different lengths: padding present
        predicted = int((mask[:, 1:] == 1).sum())
        for row in range(len(ids)):
            n = int(mask[row].sum())
            alone = lm_teach_signals(model, s.memories, ids[row:row + 1, :n], mask[row:row + 1, :n])
            for d, a in zip(teach, alone):
                assert torch.equal(d[row, n:], torch.zeros_like(d[row, n:]))  # padding: no teach signal
                torch.testing.assert_close(d[row, :n], a[0] * (n - 1) / predicted, rtol=1e-4, atol=1e-7)


def test_a_resumed_local_memory_continues_its_open_chunks_and_momentum_bit_for_bit():
    """Global clock, chunks of 5 and 25 tokens, Titans' momentum: after task 1 (20 tokens) level 1's chunk
    holds 20 tokens' gradient and level 0 has a velocity. A run resumed there from the strategy state
    (torch.save'd) and the memory weights closes level 1 at token 25 with the same sum, and ends task 2
    with the uninterrupted run's weights, bit for bit."""
    import copy
    import io

    opts = {**LOCAL, "chunk_sizes": [5, 25], "local_momentum": 0.9, "local_lr": 0.5}
    s, model = make("cms_local", opts, model=tiny_llama(seed=6))
    opt = make_optimizer(s, model, s.train)

    def task(strategy, m, optimizer, index):
        begin(strategy, m, index)
        for step in (1, 2):
            train_step(strategy, m, optimizer, step, [token_batch(10 * index + step, length=10)])
        strategy.after_task(TaskView(index, f"task{index}", ()), m)

    task(s, model, opt, 1)
    assert s.memories[0].chunk_fill == [0, 20] and s.memories[0].velocity[0] is not None
    buf = io.BytesIO()
    torch.save(s.state_dict(), buf)
    weights = copy.deepcopy({n: p.detach().clone() for n, p in s.trainable.items()})
    task(s, model, opt, 2)

    r, rmodel = make("cms_local", opts, model=tiny_llama(seed=6))
    with torch.no_grad():
        for n, p in r.trainable.items():
            p.copy_(weights[n])
    buf.seek(0)
    r.load_state_dict(torch.load(buf, weights_only=True))
    task(r, rmodel, make_optimizer(r, rmodel, r.train), 2)
    assert [lv["at"] for lv in r.diagnostics()["cms"]["levels"]] == [[25, 30, 35, 40], [25]]
    assert all(torch.equal(r.trainable[n], s.trainable[n]) for n in s.trainable)


def test_all_leaves_cms_local_out_so_no_grid_that_says_all_changed(tmp_path):
    """``strategies: [all]`` ran cms (its LoRA form) and no local memory before the split; it still does:
    the local memory runs where a grid names it (make bench's cms-local row)."""
    from clbench.run.plan import plan
    from tests.conftest import micro_config

    _, entries = plan(micro_config(tmp_path, strategies="[all, {name: cms_local, label: cms-local}]"))
    names = [(e.spec.name, e.spec.run_label) for e in entries]
    assert ("cms", "cms") in names and ("cms_local", "cms-local") in names
    assert [n for n, _ in names].count("cms_local") == 1


def test_test_time_updates_with_step_chunks_are_refused_naming_the_field_and_the_allowed_values():
    """With chunk_unit: steps a level steps only at the end of a training step, never during evaluation: a
    tt row would score exactly what the plain memory scores (measured on SmolLM2) at about 6x the evaluation cost."""
    from clbench.train import registry

    cls = registry.get("cms_local")
    with pytest.raises(ConfigError, match="chunk_unit: tokens") as info:
        cls.options_from({"chunk_unit": "steps", "chunk_sizes": [1, 4], "test_time_updates": True}, "row")
    assert "row.test_time_updates" in str(info.value)
    assert cls.options_from({"chunk_unit": "tokens", "chunk_sizes": [4, 32], "test_time_updates": True},
                            "row").test_time_updates
    assert not cls.options_from({"chunk_unit": "steps", "chunk_sizes": [1, 4]}, "row").test_time_updates
