"""layer_tiers and importance_tiers through real optimizers, the real trainer loop and real micro runs."""

from __future__ import annotations

import copy
import json
import math
import struct
from types import SimpleNamespace

import pytest
import torch

from clbench.backends.torch_backend import TorchBackend
from clbench.config.experiment import TrainConfig
from clbench.data.encoding import Encoded, batch_stream
from clbench.errors import ConfigError
from clbench.modeling.lm_loss import causal_lm_loss
from clbench.train.loop import train_task
from clbench.train.strategy import TaskView
from clbench.train.tiers.schedule import active_tiers
from tests.nested_helpers import apply_grads, begin, make, snapshot, tiny_llama, token_batch, train_step

SEED_TABLE = {1: [0], 2: [0, 1], 3: [0], 4: [0, 1, 2], 5: [0], 6: [0, 1], 7: [0], 8: [0, 1, 2]}


def changed_tiers(strategy, before: dict) -> list[int]:
    """Tiers whose every parameter changed; fails if a tier changed only in part."""
    up = strategy.updater
    out = []
    for t in range(up.n_tiers):
        moved = [not torch.equal(strategy.trainable[n], before[n]) for n in up.members(t)]
        assert all(moved) or not any(moved), f"tier {t} changed only in part"
        if all(moved):
            out.append(t)
    return out


def test_layer_tiers_follow_the_seed_table_and_counts_with_adamw():
    s, model = make("layer_tiers")
    up = s.updater
    sizes = [len(up.members(t)) for t in range(3)]
    assert all(sizes) and sum(sizes) == len(s.trainable) == 56  # every LoRA tensor is tiered (seed 002, bug 1)
    begin(s, model)
    opt = torch.optim.AdamW(s.backend.param_groups(s, 1e-2), lr=1e-2, weight_decay=0.1)
    for step in range(1, 21):
        before = snapshot(s.trainable)
        updated = train_step(s, model, opt, step, [token_batch(step)])
        expect = SEED_TABLE.get(step, active_tiers(step, [1, 2, 4]))
        assert changed_tiers(s, before) == expect, f"step {step}"
        assert updated == sum(s.trainable[n].numel() for t in expect for n in up.members(t))
    s.after_task(None, model)
    diag = s.diagnostics()["tiers"]
    assert [t["updates"] for t in diag["tiers"]] == [20, 10, 5]
    assert diag["tiers"][2]["steps"] == [4, 8, 12, 16, 20]
    assert len(diag["tiers"][1]["grad_norms"]) == 10 and all(g > 0 for g in diag["tiers"][1]["grad_norms"])
    assert all(t["drift"] > 0 for t in diag["tiers"])
    assert all(p.requires_grad for p in s.trainable.values())  # restored after the task
    begin(s, model, 2)
    opt = torch.optim.AdamW(s.backend.param_groups(s, 1e-2), lr=1e-2)
    for step in range(1, 5):
        train_step(s, model, opt, step, [token_batch(100 + step)])
    diag = s.diagnostics()["tiers"]
    assert [t["updates"] for t in diag["tiers"]] == [4, 2, 1]  # per task ...
    assert [t["updates_total"] for t in diag["tiers"]] == [24, 12, 6]  # ... and over the run


def test_adam_state_belongs_to_the_updates_made():
    s, model = make("layer_tiers")
    begin(s, model)
    opt = torch.optim.AdamW(s.backend.param_groups(s, 1e-2), lr=1e-2)
    tier = {t: [s.trainable[n] for n in s.updater.members(t)] for t in range(3)}

    def steps(t):
        return {int(opt.state[p]["step"]) if p in opt.state else 0 for p in tier[t]}

    train_step(s, model, opt, 1, [token_batch(1)])
    assert (steps(0), steps(1), steps(2)) == ({1}, {0}, {0})
    train_step(s, model, opt, 2, [token_batch(2)])
    assert (steps(0), steps(1), steps(2)) == ({2}, {1}, {0})
    moments = {id(p): (opt.state[p]["exp_avg"].clone(), opt.state[p]["exp_avg_sq"].clone()) for p in tier[1]}
    train_step(s, model, opt, 3, [token_batch(3)])
    for p in tier[1]:  # inactive at step 3: its moments did not move
        assert torch.equal(opt.state[p]["exp_avg"], moments[id(p)][0])
        assert torch.equal(opt.state[p]["exp_avg_sq"], moments[id(p)][1])
    train_step(s, model, opt, 4, [token_batch(4)])
    assert (steps(0), steps(1), steps(2)) == ({4}, {2}, {1})


def test_weight_decay_only_on_the_tiers_steps():
    """Tier 2's lora_A has an exactly zero gradient at its first update (its B is still zero), so its
    whole change at step 4 is AdamW's decoupled decay, p·(1 − lr·wd); before that, not even decay."""
    lr, wd = 0.05, 0.5
    s, model = make("layer_tiers")
    begin(s, model)
    opt = torch.optim.AdamW(s.backend.param_groups(s, lr), lr=lr, weight_decay=wd)
    a_names = [n for n in s.updater.members(2) if "lora_A" in n]
    start = snapshot(s.trainable)
    for step in (1, 2, 3):
        train_step(s, model, opt, step, [token_batch(step)])
        assert all(torch.equal(s.trainable[n], start[n]) for n in a_names)
    train_step(s, model, opt, 4, [token_batch(4)])
    for n in a_names:
        assert torch.allclose(s.trainable[n], start[n] * (1 - lr * wd), rtol=0, atol=1e-7)
        assert not torch.equal(s.trainable[n], start[n])


def test_skip_does_not_even_compute_inactive_gradients():
    s, model = make("layer_tiers", {"order": "deep_fast"})
    begin(s, model)
    s.before_step(1)
    keep = s.grad_names(1)
    fast = set(s.updater.members(0))
    assert fast and set(keep) == fast
    _, _, grads = s.backend.forward_backward(model, s.trainable, s.loss, [token_batch(0)], keep)
    assert set(grads) == fast  # autograd built no gradient for the inactive tiers
    assert all(p.requires_grad for p in s.trainable.values())  # frozen for the step only


def test_clipping_is_the_global_norm_of_what_updates():
    s, model = make("layer_tiers")
    begin(s, model)
    opt = torch.optim.SGD(s.backend.param_groups(s, 1.0), lr=1.0)
    s.before_step(1)  # tier 0 only
    grads = {n: torch.full_like(p, 0.01) for n, p in s.trainable.items()}
    before = snapshot(s.trainable)
    apply_grads(s, model, opt, 1, grads, max_grad_norm=0.5)
    active = s.updater.members(0)
    change = torch.cat([(before[n] - s.trainable[n]).flatten() for n in active])
    assert change.norm().item() == pytest.approx(0.5, rel=1e-4)  # clipped over tier 0 alone
    assert all(torch.equal(s.trainable[n], before[n]) for n in s.updater.members(1) + s.updater.members(2))


def tier_changes(clip: str, step: int, semantics: str = "skip") -> list[torch.Tensor]:
    """The change of every tier after one SGD(lr 1) step with the same gradient (0.01 everywhere),
    clipped at 0.5, at task step ``step`` (1: tier 0 alone; 4: all three tiers)."""
    s, model = make("layer_tiers", {"clip": clip, "inactive": semantics})
    begin(s, model)
    opt = torch.optim.SGD(s.backend.param_groups(s, 1.0), lr=1.0)
    s.before_step(step)
    grads = {n: torch.full_like(p, 0.01) for n, p in s.trainable.items()}
    before = snapshot(s.trainable)
    apply_grads(s, model, opt, step, grads, max_grad_norm=0.5)
    return [torch.cat([(before[n] - s.trainable[n]).flatten() for n in s.updater.members(t)]) for t in range(3)]


def test_per_tier_clipping_makes_a_tiers_update_independent_of_the_other_tiers():
    """Default ``clip: per_tier``: tier 0's update is bitwise the same at a step where it updates alone
    and at a step where the slow tiers update too; each tier is clipped to the bound by its own norm."""
    alone, together = tier_changes("per_tier", 1), tier_changes("per_tier", 4)
    assert torch.equal(alone[0], together[0])
    assert [c.norm().item() for c in together] == pytest.approx([0.5, 0.5, 0.5], rel=1e-4)
    assert alone[1].abs().max() == 0 and alone[2].abs().max() == 0
    # accumulate: at step 4 the slow tiers bring their chunk sums, still without touching tier 0's update
    assert torch.equal(tier_changes("per_tier", 1, "accumulate")[0], tier_changes("per_tier", 4, "accumulate")[0])
    # clip: global couples them — one norm over the three tiers shrinks tier 0's update at step 4
    g_alone, g_together = tier_changes("global", 1), tier_changes("global", 4)
    assert torch.equal(g_alone[0], alone[0])  # one tier alone: the two rules agree
    assert torch.cat(g_together).norm().item() == pytest.approx(0.5, rel=1e-4)
    assert g_together[0].norm().item() < 0.9 * g_alone[0].norm().item()


@pytest.mark.parametrize("clip", ["per_tier", "global"])
def test_a_gradient_already_below_the_bound_is_applied_unscaled(clip):
    """Clipping only ever shrinks: a tier whose gradient norm is below max_grad_norm (1e-4 per element,
    norms far below 0.5) is applied as it is, bitwise, never scaled up to the bound."""
    s, model = make("layer_tiers", {"clip": clip})
    begin(s, model)
    opt = torch.optim.SGD(s.backend.param_groups(s, 1.0), lr=1.0)
    s.before_step(4)  # all three tiers
    grads = {n: torch.full_like(p, 1e-4) for n, p in s.trainable.items()}
    assert torch.cat([g.flatten() for g in grads.values()]).norm() < 0.05
    before = snapshot(s.trainable)
    apply_grads(s, model, opt, 4, {n: g.clone() for n, g in grads.items()}, max_grad_norm=0.5)
    for n, p in s.trainable.items():
        assert torch.equal(p, before[n] - grads[n]), n


def test_a_step_with_no_active_tier_changes_nothing():
    s, model = make("layer_tiers", {"frequencies": [2, 4]})
    begin(s, model)
    opt = torch.optim.AdamW(s.backend.param_groups(s, 1e-2), lr=1e-2, weight_decay=0.1)
    before = snapshot(s.trainable)
    assert train_step(s, model, opt, 1, [token_batch(1)]) == 0
    assert all(torch.equal(p, before[n]) for n, p in s.trainable.items()) and not opt.state
    assert train_step(s, model, opt, 2, [token_batch(2)]) > 0


@pytest.mark.parametrize("clip", ["per_tier", "global"])
def test_tiers_with_the_trainer_accumulation_warmup_schedule_and_clipping(clip):
    """train_task with grad_accum 2, warm-up, linear decay and clipping equals a hand-written loop."""
    cfg = TrainConfig(steps_per_task=8, batch_size=4, grad_accum=2, lr=0.3, warmup_steps=3, schedule="linear",
                      max_grad_norm=0.05)
    s, model = make("layer_tiers", {"order": "deep_fast", "clip": clip}, model=tiny_llama(dtype=torch.float64),
                    train=cfg)
    reference = copy.deepcopy(model)
    ref_params = {n: p for n, p in reference.named_parameters() if n in s.trainable}
    gen = torch.Generator().manual_seed(0)
    records = [{"ids": torch.randint(1, 64, (int(k),), generator=gen).tolist()}
               for k in torch.randint(5, 11, (12,), generator=gen)]
    task = TaskView(1, "t", tuple(records), encode=lambda r: Encoded(r["ids"], r["ids"]))
    begin(s, model)
    opt = torch.optim.SGD(s.backend.param_groups(s, cfg.lr), lr=cfg.lr)
    log = train_task(model, SimpleNamespace(pad_token_id=0), s, task, opt, cfg, seed=7, global_step=0,
                     progress=False)
    batches = batch_stream([task.encode(r) for r in records], cfg.batch_size, 0, seed=7)
    tier_of = s.updater.tier_map
    for step in range(1, cfg.steps_per_task + 1):
        grads = {n: torch.zeros_like(p) for n, p in ref_params.items()}
        for _ in range(cfg.grad_accum):
            loss = causal_lm_loss(reference, next(batches)) / cfg.grad_accum  # the backend's lm_loss
            for (n, g) in zip(ref_params, torch.autograd.grad(loss, list(ref_params.values()))):
                grads[n] += g
        active = [n for n in ref_params if tier_of[n] in active_tiers(step, [1, 2, 4])]
        groups = [active] if clip == "global" else [[n for n in active if tier_of[n] == t] for t in
                                                    active_tiers(step, [1, 2, 4])]
        factor_of = {}
        for group in groups:
            norm = torch.sqrt(sum(grads[n].pow(2).sum() for n in group))
            factor_of.update(dict.fromkeys(group, min(1.0, cfg.max_grad_norm / (float(norm) + 1e-6))))
        i = step - 1  # transformers' linear schedule, by hand
        factor = i / cfg.warmup_steps if i < cfg.warmup_steps else (8 - i) / (8 - cfg.warmup_steps)
        assert log[step - 1]["lr"] == pytest.approx(cfg.lr * factor)
        assert log[step - 1]["updated_elements"] == sum(ref_params[n].numel() for n in active)
        with torch.no_grad():
            for n in active:
                ref_params[n] -= cfg.lr * factor * factor_of[n] * grads[n]
    for n, p in s.trainable.items():
        assert torch.allclose(p, ref_params[n], rtol=1e-9, atol=1e-12), n


def scale_layer_lora(model, layer: int, factor: float) -> None:
    for name, module in model.named_modules():
        if f"layers.{layer}." in name and hasattr(module, "scaling") and isinstance(module.scaling, dict):
            module.scaling["default"] *= factor


def test_importance_puts_the_layer_with_large_gradients_in_the_fastest_tier():
    """The schedule around a ranking, with the earlier score (LoRA's own gradients, which the scaling
    below inflates for layer 2); the ∂L/∂ΔW score is checked against autograd below."""
    s, model = make("importance_tiers", {"warmup_steps": 3, "rerank_each_task": False, "score": "lora_abs"})
    scale_layer_lora(model, 2, 1000.0)
    begin(s, model)
    opt = torch.optim.AdamW(s.backend.param_groups(s, 1e-3), lr=1e-3)
    assert s.updater.tier_map is None
    for step in range(1, 9):
        before = snapshot(s.trainable)
        train_step(s, model, opt, step, [token_batch(step)])
        if step > 3:
            assert changed_tiers(s, before) == SEED_TABLE[step]
    tier_map = dict(s.updater.tier_map)
    layer2 = [n for n in s.trainable if ".layers.2." in n]
    assert layer2 and all(tier_map[n] == 0 for n in layer2)
    assert sum(t == 0 for t in tier_map.values()) < len(tier_map) / 2
    s.after_task(None, model)
    diag = s.diagnostics()
    assert [t["steps"] for t in diag["tiers"]["tiers"]] == [[1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 6, 8], [1, 2, 3, 4, 8]]
    assert diag["importance"]["ranked_at_tasks"] == [1]
    # rerank_each_task false: the next task keeps the ranking and is tiered from its first step
    begin(s, model, 2)
    before = snapshot(s.trainable)
    train_step(s, model, opt, 1, [token_batch(50)])
    assert changed_tiers(s, before) == [0] and s.updater.tier_map == tier_map
    # ... and a resumed run gets it back from the strategy state
    fresh, _ = make("importance_tiers", {"warmup_steps": 3, "rerank_each_task": False, "score": "lora_abs"})
    fresh.load_state_dict(s.state_dict())
    assert fresh.updater.tier_map == tier_map and fresh.updater.totals == s.updater.totals


def test_importance_reranks_each_task_by_default():
    s, model = make("importance_tiers", {"warmup_steps": 2})
    opt = torch.optim.AdamW(s.backend.param_groups(s, 1e-3), lr=1e-3)
    for task in (1, 2):
        begin(s, model, task)
        before = snapshot(s.trainable)
        train_step(s, model, opt, 1, [token_batch(task)])
        assert all(not torch.equal(p, before[n]) for n, p in s.trainable.items() if "lora_B" in n)  # warm-up
        train_step(s, model, opt, 2, [token_batch(task + 10)])
        s.after_task(None, model)
    assert s.ranked_at == [1, 2]


def test_importance_ranks_lora_a_and_b_of_a_layer_together():
    def warmed(unit):
        s, model = make("importance_tiers", {"warmup_steps": 2, "unit": unit, "score": "lora_abs"})
        begin(s, model)
        opt = torch.optim.AdamW(s.backend.param_groups(s, 1e-3), lr=1e-3)
        for step in (1, 2):
            train_step(s, model, opt, step, [token_batch(step)])
        return s.updater.tier_map

    pairs = [(n, n.replace("lora_A", "lora_B")) for n in warmed("adapter") if "lora_A" in n]
    together, alone = warmed("adapter"), warmed("tensor")
    assert all(together[a] == together[b] for a, b in pairs)
    # ranked alone, B (zero at start, A's gradient exactly zero at step 1) outranks A of the same layer
    assert sum(alone[b] < alone[a] for a, b in pairs) > len(pairs) / 2


def base_weight_grads(model, batch) -> dict[str, torch.Tensor]:
    """∂L/∂W of every LoRA-adapted base weight, by autograd on a copy (the gradient of ΔW = scale·B·A)."""
    twin = copy.deepcopy(model)
    weights = {name: m.base_layer.weight for name, m in twin.named_modules()
               if hasattr(m, "base_layer") and hasattr(m, "lora_A")}
    for w in weights.values():
        w.requires_grad_(True)
    grads = torch.autograd.grad(causal_lm_loss(twin, batch), list(weights.values()))
    return dict(zip(weights, grads))


def test_importance_score_is_the_rms_of_dl_d_delta_w_over_elements_and_warmup_steps():
    from clbench.train.tiers.schedule import tiers_by_score

    s, model = make("importance_tiers", {"warmup_steps": 2})
    begin(s, model)
    opt = torch.optim.AdamW(s.backend.param_groups(s, 1e-2), lr=1e-2)
    sq: dict[str, float] = {}
    size: dict[str, int] = {}
    for step in (1, 2):
        for unit, g in base_weight_grads(model, token_batch(step)).items():
            sq[unit] = sq.get(unit, 0.0) + float(g.pow(2).sum())
            size[unit] = g.numel()
        train_step(s, model, opt, step, [token_batch(step)])
    want = {u: math.sqrt(sq[u] / (2 * size[u])) for u in sq}  # RMS over elements and the two steps
    assert set(s.scores) == set(want) and len(want) == 4 * 7  # 7 adapted weights per block
    for u, value in want.items():
        assert s.scores[u] == pytest.approx(value, rel=1e-4), u
    ranked = tiers_by_score(want, 3)
    assert s.updater.tier_map == {n: ranked[adapter_of(n)] for n in s.trainable}
    # the base weights were read, never trained, and no longer require a gradient after the warm-up
    assert all(not m.base_layer.weight.requires_grad and m.base_layer.weight.grad is None
               for m in model.modules() if hasattr(m, "base_layer") and hasattr(m, "lora_A"))
    assert s.diagnostics()["importance"]["score"] == "delta_w"


def adapter_of(name: str) -> str:
    from clbench.train.tiers.schedule import adapter_unit

    return adapter_unit(name)


def refactorised(model, seed: int = 3):
    """The same ΔW = scale·B·A written as (B·M⁻¹)(M·A): the same function, other LoRA tensors."""
    gen = torch.Generator().manual_seed(seed)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for m in twin.modules():
            if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {}):
                a, b = m.lora_A["default"].weight, m.lora_B["default"].weight
                r = a.shape[0]
                M = torch.diag(torch.logspace(-1, 1, r)) + 0.1 * torch.randn(r, r, generator=gen)
                a.copy_(M @ a)
                b.copy_(b @ torch.linalg.inv(M))
    return twin


def test_importance_score_does_not_depend_on_how_lora_factorises_the_update():
    """(B·M⁻¹)(M·A) = B·A: same model, same ∂L/∂ΔW, same scores. The earlier score (mean |g| of A and B)
    changes — it measures LoRA's parametrisation, not the weight's importance."""
    def warmed(model, score):
        s = make_prepared(model, score)
        begin(s, s.model)
        opt = torch.optim.AdamW(s.backend.param_groups(s, 1e-2), lr=1e-2)
        train_step(s, s.model, opt, 1, [token_batch(7)])
        return s.scores

    s, model = make("importance_tiers", {"warmup_steps": 1})
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # B away from zero, so ΔW ≠ 0 and A's gradient is not zero either
        for n, p in s.trainable.items():
            if "lora_B" in n:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    twin = refactorised(model)
    batch = token_batch(7)
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, twin(**batch).logits, atol=1e-4)
    new = [warmed(m, "delta_w") for m in (model, twin)]
    assert set(new[0]) == set(new[1])
    for u in new[0]:
        assert new[1][u] == pytest.approx(new[0][u], rel=1e-3), u
    old = [warmed(m, "lora_abs") for m in (model, twin)]
    assert max(abs(old[1][u] / old[0][u] - 1) for u in old[0]) > 0.5


def make_prepared(model, score):
    """importance_tiers on an already LoRA-wrapped model (a copy): the runner's set-up minus prepare_model."""
    from clbench.train import registry

    cls = registry.get("importance_tiers")
    s = cls(cls.options_from({"warmup_steps": 1, "score": score}, "importance_tiers"), seed=0,
            train=TrainConfig(), backend=TorchBackend())
    s.model = copy.deepcopy(model)
    s.mark_trainable(s.model)
    return s


def test_delta_w_score_needs_the_adapter_as_unit():
    with pytest.raises(ConfigError, match=r"importance_tiers\.unit: unit: tensor ranks LoRA's A and B apart"):
        make("importance_tiers", {"unit": "tensor"})


def test_bad_tier_options_name_the_field():
    from clbench.train import registry

    with pytest.raises(ConfigError, match=r"x\.frequencies"):
        registry.get("layer_tiers").options_from({"frequencies": [1, 0]}, "x")
    with pytest.raises(ConfigError, match=r"x\.warmup_steps"):
        registry.get("importance_tiers").options_from({"warmup_steps": 0}, "x")
    with pytest.raises(ConfigError, match="allowed: deep_fast, shallow_fast"):
        registry.get("layer_tiers").options_from({"order": "middle"}, "x")


MICRO_GRID = ("[{name: layer_tiers}, {name: layer_tiers, label: layer_tiers-deep, options: {order: deep_fast}}, "
              "{name: importance_tiers, options: {warmup_steps: 2}}, {name: cms}, "
              "{name: cms, label: cms-adapter, options: {form: adapter}}, {name: sft, label: surprise, with: [surprise]}, "
              "{name: cms, label: surprise-cms, options: {form: adapter}, with: [surprise]}]")


def safetensors_header(path) -> tuple[int, dict]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return n, json.loads(raw[8:8 + n])


def test_micro_runs_write_results_and_adapter_checkpoints_with_tier_metadata(tmp_path, micro_cache, micro_base_dir):
    from clbench.run.grid import run_grid
    from tests.conftest import micro_config

    cfg = micro_config(tmp_path, cache_dir=micro_cache, strategies=MICRO_GRID)
    runs = run_grid(cfg, progress=False, echo=lambda *a: None)
    assert [status for _, status in runs] == ["done"] * 7
    steps = cfg.train.steps_per_task
    for run, _ in runs:
        label = run.parent.name
        metrics = json.loads((run / "metrics.json").read_text())
        n_params = metrics["cost"]["trainable_parameters"]
        after = json.loads((run / "eval" / "after_2.json").read_text())["diagnostics"]
        ckpt = run / "checkpoints" / "task_2" / "adapter.safetensors"
        header_len, header = safetensors_header(ckpt)
        assert ckpt.stat().st_size == 8 + header_len + 4 * n_params  # float32 adapter, nothing else
        assert header_len < 64_000
        tensors = [k for k in header if k != "__metadata__"]
        meta = json.loads(header["__metadata__"]["clbench"])
        if label.startswith("cms-adapter") or label == "surprise-cms":
            assert all(".levels." in k for k in tensors)
        if label == "surprise" or label == "surprise-cms":
            log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
            assert all("surprise_aux_l1" in r for r in log)  # micro model: 2 blocks, default layer -1
            assert after["surprise"]["layers"]["1"]["steps"] == steps
        if label == "surprise":
            continue
        assert sorted(meta["tiers"]["map"]) == sorted(tensors)
        tiers = after["tiers"]["tiers"]
        if label == "importance_tiers":
            assert [t["updates"] for t in tiers] == [6, 4, 3]  # 2 warm-up steps, then steps 3..6 tiered
        elif label.startswith("cms") or label == "surprise-cms":  # global clock: task 2 is steps 7..12
            assert after["tiers"]["clock"] == "global"
            assert [t["updates"] for t in tiers] == [(2 * steps // f - steps // f) if t["parameters"] else 0
                                                     for t, f in zip(tiers, (1, 2, 4))]
            assert [t["updates_total"] for t in tiers] == [2 * steps // f if t["parameters"] else 0
                                                           for t, f in zip(tiers, (1, 2, 4))]
        else:  # the micro model has 2 blocks: by depth, the third tier is empty
            assert [t["updates"] for t in tiers] == [steps // f if t["parameters"] else 0
                                                     for t, f in zip(tiers, (1, 2, 4))]
        if label not in ("importance_tiers", "surprise"):
            assert [t["parameters"] > 0 for t in tiers] == [True, True, label.startswith("cms-adapter")
                                                            or label == "surprise-cms"]
        if not (label.startswith("cms") or label == "surprise-cms"):
            assert [t["updates_total"] for t in tiers] == [2 * t["updates"] for t in tiers]
        assert meta["tiers"]["updates_total"] == [t["updates_total"] for t in tiers]
