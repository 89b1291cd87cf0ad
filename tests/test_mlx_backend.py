"""The MLX backend: tier exactness, flattened-gradient filtering, results layout, torch parity.

MLX on this Linux CPU is slow (~5 GFLOP/s), so every model here is microscopic (hidden <= 64, 2-3
blocks) and every run takes a few steps. The parity test builds its own tiny base model (tasks/parity.yaml,
one entity per trained domain) once, then runs the same stream with torch and with MLX.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core", reason="the mlx extra is not installed")

import mlx.optimizers as optim
from mlx import nn
from mlx.utils import tree_flatten

from clbench.backends.mlx import surprise as mlx_surprise
from clbench.backends.mlx.backend import MLXBackend, causal_lm_loss, to_mx
from clbench.backends.mlx.optim import PerTensor
from clbench.config.experiment import TrainConfig
from clbench.errors import ConfigError
from clbench.train import registry
from clbench.train.loop import train_task
from clbench.train.strategy import TaskView, UpdateContext
from clbench.train.types import LossOutput, SurpriseTerms
from tests.conftest import micro_config

BACKEND = MLXBackend()
LayerTiers, ImportanceTiers, CMS = (registry.get(n) for n in ("layer_tiers", "importance_tiers", "cms"))


def on_mlx(cls, train: TrainConfig | None = None, **options):
    """The registered strategy ``cls`` (one class for every backend) on the MLX backend."""
    return cls(cls.Options(**options), train=train, backend=BACKEND)

MODULES = ["mlp.down_proj", "mlp.gate_proj", "mlp.up_proj", "self_attn.k_proj", "self_attn.o_proj",
           "self_attn.q_proj", "self_attn.v_proj"]


def lora_names(layers) -> set[str]:
    return {f"model.layers.{i}.{m}.{p}" for i in layers for m in MODULES for p in ("lora_a", "lora_b")}


@pytest.fixture(scope="module")
def tokenizer(micro_stream):
    from clbench.modeling.tiny import tokenizer_corpus
    from clbench.modeling.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer(tokenizer_corpus(micro_stream), 300)


def tiny_model(vocab: int, layers: int = 3, seed: int = 0):
    """The embedded architecture built directly in MLX: mlx-lm's Llama from a ModelArgs."""
    from mlx_lm.models.llama import Model, ModelArgs

    mx.random.seed(seed)
    return Model(ModelArgs(model_type="llama", hidden_size=32, num_hidden_layers=layers, intermediate_size=64,
                           num_attention_heads=2, rms_norm_eps=1e-6, vocab_size=vocab, tie_word_embeddings=True))


def task_view(stream, tokenizer, t: int = 1) -> TaskView:
    from clbench.data.encoding import encode_example

    return TaskView(t, stream.tasks[t].name, stream.tasks[t].train, lambda r: encode_example(tokenizer, r, 64))


def test_flattened_gradient_filter_is_non_empty_and_exact(tokenizer, micro_stream):
    """Seed 002's critical bug: filtering the nested gradient tree by flat names matched nothing."""
    from clbench.data.encoding import batch_stream

    strategy = on_mlx(LayerTiers, frequencies=(1, 2, 4))
    model = strategy.prepare_model(tiny_model(len(tokenizer)))
    strategy.mark_trainable(model)
    view = task_view(micro_stream, tokenizer)
    batch = next(batch_stream([view.encode(r) for r in view.examples], 4, tokenizer.pad_token_id, 0))
    _, tree = nn.value_and_grad(model, causal_lm_loss)(model, to_mx(batch))
    assert set(tree) == {"model"}  # nested: {"model": {"layers": [...]}}, no flat names at the top
    strategy.before_task(view, model)
    strategy.before_step(1)
    never = UpdateContext(1, 1, tree, 0.1, 0.0, lambda g, n=None: pytest.fail("a nested tree was applied"))
    with pytest.raises(KeyError, match="outside the tier map"):
        strategy.apply_update(never)  # the nested tree is refused loudly, never filtered to {}
    _, _, flat = BACKEND.forward_backward(model, strategy.trainable, strategy.loss, [batch], None)
    assert set(flat) == set(dict(tree_flatten(tree))) == lora_names(range(3))
    for step, layers in ((1, [0]), (2, [0, 1]), (4, [0, 1, 2])):
        strategy.before_step(step)
        keep = strategy.grad_names(step)
        assert set(keep) == lora_names(layers)
        _, _, grads = BACKEND.forward_backward(model, strategy.trainable, strategy.loss, [batch], keep)
        assert set(grads) == lora_names(layers)  # the frozen tiers' gradients are not even computed


class Recorded(LayerTiers):
    """layer_tiers, plus a copy of the parameters after every update (the observation, not a stand-in)."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.grad_sets, self.snapshots = [], []

    def prepare_model(self, model):
        self.model = super().prepare_model(model)
        return self.model

    def apply_update(self, ctx: UpdateContext) -> int:
        self.grad_sets.append(set(ctx.grads))
        n = super().apply_update(ctx)
        self.snapshots.append({k: np.array(v) for k, v in tree_flatten(self.model.trainable_parameters())})
        return n


def test_layer_tiers_counts_bitwise_frozen_and_optimizer_state(tokenizer, micro_stream):
    """[1, 2, 4] over 20 steps: counts [20, 10, 5]; inactive tiers bitwise unchanged (and their gradient
    not even computed); active ones change (weight decay moves every updated tensor); each tensor's
    AdamW step count equals its tier's update count."""
    cfg = TrainConfig(steps_per_task=20, batch_size=4, lr=1e-2, weight_decay=0.1)
    strategy = on_mlx(Recorded, train=cfg, frequencies=(1, 2, 4))
    model = strategy.prepare_model(tiny_model(len(tokenizer)))
    strategy.mark_trainable(model)
    view = task_view(micro_stream, tokenizer)
    start = {k: np.array(v) for k, v in strategy.trainable.items()}
    optimizer = BACKEND.make_optimizer(strategy, model, cfg)
    strategy.before_task(view, model)
    log = train_task(model, tokenizer, strategy, view, optimizer, cfg, seed=0, global_step=0, progress=False)
    strategy.after_task(view, model)

    tiers = strategy.diagnostics()["tiers"]["tiers"]
    assert [t["updates"] for t in tiers] == [20, 10, 5]
    assert tiers[2]["steps"] == [4, 8, 12, 16, 20]
    tier_of = strategy.updater.tier_map
    assert {tier_of[n] for n in lora_names([0])} == {0} and {tier_of[n] for n in lora_names([2])} == {2}
    previous = start
    for step, (grads, snap) in enumerate(zip(strategy.grad_sets, strategy.snapshots), start=1):
        active = [t for t, f in enumerate((1, 2, 4)) if step % f == 0]
        assert grads == lora_names(active)  # only the active tiers' gradients were computed
        for name, value in snap.items():
            if tier_of[name] in active:
                assert not np.array_equal(value, previous[name]), (step, name)
            else:
                assert np.array_equal(value, previous[name]), (step, name)
        previous = snap
    steps = optimizer.steps()
    assert all(steps[n] == [20, 10, 5][tier_of[n]] for n in steps)
    assert [r["active_tiers"] for r in log[:4]] == [[0], [0, 1], [0], [0, 1, 2]]
    assert sum(r["updated_elements"] for r in log) == sum(
        [20, 10, 5][tier_of[n]] * v.size for n, v in strategy.trainable.items())
    assert all(t["drift"] > 0 for t in tiers)


class Linear3(nn.Module):
    """Three 2x2 weights named like transformer blocks (``layers.<i>.weight``)."""

    def __init__(self):
        super().__init__()
        self.layers = [nn.Linear(2, 2, bias=False) for _ in range(3)]


def run_updates(strategy, model, grads_per_step, lr=0.1):
    strategy.mark_trainable(model)
    strategy.before_task(TaskView(1, "t", ()), model)
    sgd = PerTensor(strategy.trainable, lambda: optim.SGD(learning_rate=0.0))
    sgd.lr_scale = BACKEND.make_optimizer(strategy, model, TrainConfig()).lr_scale  # cms inverse_chunk: 1/C_l

    def apply(grads, total_norm=None):
        return BACKEND.apply_gradients(sgd, model, strategy.trainable, grads, lr, 0.0)

    history = []
    for step, grads in enumerate(grads_per_step, start=1):
        strategy.before_step(step)
        strategy.apply_update(UpdateContext(step, step, grads, lr, 0.0, apply))
        history.append({k: np.array(v) for k, v in tree_flatten(model.parameters())})
    return history


@pytest.mark.parametrize("scale, factor", [("inverse_chunk", 1 / 4), ("mean", 1 / 4), ("none", 1.0)])
def test_cms_applies_the_chunk_sum_at_boundaries_only(scale, factor):
    """Plain SGD: level 2 (C=4) is unchanged at steps 1-3 and moves by -lr*factor*sum(g_1..g_4) at step 4."""
    model = Linear3()
    mx.eval(model.parameters())
    w0 = {k: np.array(v) for k, v in tree_flatten(model.parameters())}
    strategy = on_mlx(CMS, mode="full", chunk_sizes=(1, 2, 4), scale=scale)
    grads = [{f"layers.{i}.weight": mx.full((2, 2), float(s)) for i in range(3)} for s in (1, 2, 3, 4)]
    history = run_updates(strategy, model, grads)
    slow = "layers.2.weight"
    for step in (1, 2, 3):
        assert np.array_equal(history[step - 1][slow], w0[slow])
    np.testing.assert_allclose(history[3][slow] - w0[slow], -0.1 * factor * (1 + 2 + 3 + 4), rtol=1e-5)
    mid = "layers.1.weight"  # C=2: steps 2 and 4, each with its own chunk's sum
    scale2 = {"inverse_chunk": 0.5, "mean": 0.5, "none": 1.0}[scale]
    np.testing.assert_allclose(history[1][mid] - w0[mid], -0.1 * scale2 * (1 + 2), rtol=1e-5)
    np.testing.assert_allclose(history[3][mid] - history[2][mid], -0.1 * scale2 * (3 + 4), rtol=1e-5)
    assert [t["updates"] for t in strategy.diagnostics()["tiers"]["tiers"]] == [4, 2, 1]


def test_importance_tiers_put_the_largest_gradients_in_the_fastest_tier():
    model = Linear3()
    strategy = on_mlx(ImportanceTiers, mode="full", frequencies=(1, 2, 4), warmup_steps=2, unit="tensor",
                      score="lora_abs")
    big = {f"layers.{i}.weight": mx.full((2, 2), 10.0 if i == 1 else (1.0 if i == 0 else 0.1)) for i in range(3)}
    run_updates(strategy, model, [big, big, big, big])
    assert strategy.updater.tier_map == {"layers.1.weight": 0, "layers.0.weight": 1, "layers.2.weight": 2}
    # warm-up steps 1-2 update everything (attributed to the tiers ranked afterwards, as in torch);
    # then tier 0 at steps 3 and 4, tiers 1 and 2 at step 4
    assert [t["updates"] for t in strategy.diagnostics()["tiers"]["tiers"]] == [4, 3, 3]


def test_cms_adapter_form_starts_as_the_base_model_and_trains_only_the_chain(tokenizer):
    model = tiny_model(len(tokenizer), layers=2)
    ids = mx.array([[1, 5, 9, 14, 3]])
    before = np.array(model(ids))
    strategy = on_mlx(CMS, form="adapter", chunk_sizes=(1, 4), adapter_hidden=8)
    model = strategy.prepare_model(model)
    strategy.mark_trainable(model)
    assert np.array_equal(np.array(model(ids)), before)  # W_down = 0: the chain is the identity
    expected = {f"model.layers.{b}.mlp.levels.{lvl}.{lin}.{p}": lvl for b in range(2) for lvl in range(2)
                for lin in ("up", "down") for p in ("weight", "bias")}
    assert strategy.updater.tier_map == expected


def surprise_grads(target: str, layers, weight: float, explicit: bool = False):
    """Loss value, flat gradients, the surprise plugin and the model of ``{name: sft, options: {mode:
    full}, with: [surprise]}`` on a fixed batch (``explicit``: the extra-pass objective, not the tap)."""
    from clbench.train.plugin import Composed, attach

    sft = on_mlx(registry.get("sft"), mode="full")
    plugin_cls = registry.get_plugin("surprise")
    plugin = attach(plugin_cls, plugin_cls.Options(layers=layers, weights=(weight,), target=target), sft)
    composed = Composed(sft, [plugin])
    model = composed.prepare_model(tiny_model(60, layers=2))
    composed.mark_trainable(model)
    composed.before_step(1)

    def fn(m, batch):
        if not explicit:
            out = composed.loss(m, batch)
        else:
            plugin.step_terms.append(terms := SurpriseTerms())
            out = mlx_surprise._explicit_loss(plugin.chosen(), m, batch, sft.loss, terms)
        return out.loss, out.logs

    (value, _), tree = nn.value_and_grad(model, fn)(model, SURPRISE_BATCH)
    grads = dict(tree_flatten(tree))
    mx.eval(grads)
    return float(value), grads, plugin, model


SURPRISE_BATCH = {"input_ids": mx.array(np.random.default_rng(0).integers(3, 60, (3, 9)), dtype=mx.int32)}
SURPRISE_BATCH["labels"] = SURPRISE_BATCH["input_ids"]


def test_surprise_detached_one_layer_in_one_pass_equals_the_explicit_objective():
    """The custom-VJP tap (one backward) gives the gradient of L + λ mean((y − sg(∇_y L))²) computed
    explicitly (extra pass), and it is not the plain loss's gradient; the logged value is the main loss."""
    v_fast, fast, s_fast, _ = surprise_grads("detached", (-1,), 0.1)
    v_ref, ref, s_ref, _ = surprise_grads("detached", (-1,), 0.1, explicit=True)
    _, plain, _, _ = surprise_grads("detached", (-1,), 0.0)
    assert v_fast == pytest.approx(v_ref, rel=1e-6)
    assert s_fast.step_log()["surprise_aux_l1"] == pytest.approx(s_ref.step_log()["surprise_aux_l1"], rel=1e-5)
    scale = max(float(mx.abs(g).max()) for g in ref.values())
    assert max(float(mx.abs(fast[k] - ref[k]).max()) for k in ref) < 1e-5 * scale
    assert max(float(mx.abs(fast[k] - plain[k]).max()) for k in ref) > 1e-3 * scale


@pytest.mark.parametrize("layers", [(-1,), (0, 1)])
def test_surprise_accumulating_two_copies_of_a_batch_is_one_step_on_it(layers):
    """grad_accum 2 on two copies of a batch: the tap (one layer) and the extra pass (two) give the
    gradients and the logged terms of grad_accum 1 on the batch (each micro-batch's ∇_y L, averaged once)."""
    from clbench.train.plugin import Composed, attach

    steps = []
    for k in (1, 2):
        sft = on_mlx(registry.get("sft"), mode="full")
        plugin_cls = registry.get_plugin("surprise")
        composed = Composed(sft, [attach(plugin_cls, plugin_cls.Options(layers=layers, weights=(0.3,)), sft)])
        model = composed.prepare_model(tiny_model(60, layers=2))
        composed.mark_trainable(model)
        composed.before_task(TaskView(1, "t", ()), model)
        composed.before_step(1)
        _, _, grads = sft.backend.forward_backward(model, composed.trainable, composed.loss, [SURPRISE_BATCH] * k, None)
        steps.append((grads, composed.step_log()))
    (g1, log1), (g2, log2) = steps
    assert g1.keys() == g2.keys() and all(np.array_equal(np.array(g2[n]), np.array(g1[n])) for n in g1)
    assert log2 == log1 and len(log1) == len(layers)


def test_surprise_full_mode_is_the_true_second_order_gradient():
    """Directional derivative of the full objective by central differences matches ``full`` (second
    order through ∇_y L) and not ``detached``."""
    from mlx.utils import tree_unflatten

    _, full, strategy, model = surprise_grads("full", (0, 1), 20.0)

    def sft_loss(m, batch):  # sft's loss, what surprise wraps
        return LossOutput(strategy.backend.lm_loss(m, batch))
    _, detached, _, _ = surprise_grads("detached", (0, 1), 20.0)

    def objective():
        terms = SurpriseTerms()
        main = mlx_surprise._explicit_loss(strategy.chosen(), model, SURPRISE_BATCH, sft_loss, terms).loss
        return float(main) + sum(float(t) for t in terms.aux.values())

    params = dict(tree_flatten(model.trainable_parameters()))
    rng = np.random.default_rng(1)
    u = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
    norm = np.sqrt(sum((x * x).sum() for x in u.values()))
    values = []
    for sign in (1, -1):
        model.update(tree_unflatten([(k, params[k] + sign * 1e-2 * mx.array(u[k] / norm)) for k in params]))
        values.append(objective())
    model.update(tree_unflatten(list(params.items())))
    fd = (values[0] - values[1]) / 2e-2
    along = {name: sum(float((g[k] * mx.array(u[k] / norm)).sum()) for k in g) for name, g in
             (("full", full), ("detached", detached))}
    assert along["full"] == pytest.approx(fd, rel=0.03)
    assert abs(along["detached"] - fd) > 0.1 * abs(fd)


def test_unmapped_parameters_go_to_the_slowest_tier_with_a_warning(tokenizer):
    strategy = on_mlx(LayerTiers, mode="full", frequencies=(1, 2))
    model = strategy.prepare_model(tiny_model(len(tokenizer), layers=2))
    with pytest.warns(UserWarning, match="slowest tier"):
        strategy.mark_trainable(model)
    assert strategy.updater.tier_map["model.embed_tokens.weight"] == 1
    assert strategy.updater.tier_map["model.norm.weight"] == 1


def test_rope_parameters_of_transformers5_checkpoints_reach_mlx_lm():
    from clbench.backends.mlx.model import config_overrides

    assert config_overrides({"rope_parameters": {"rope_theta": 1e6, "rope_type": "default"}}) == {"rope_theta": 1e6}
    assert config_overrides({"rope_theta": 5e5, "rope_parameters": {"rope_theta": 1e6}}) == {}
    scaled = config_overrides({"rope_parameters": {"rope_theta": 1e4, "rope_type": "linear", "factor": 2.0}})
    assert scaled == {"rope_theta": 1e4, "rope_scaling": {"rope_type": "linear", "factor": 2.0}}


def test_a_torch_only_strategy_is_refused_naming_strategy_and_backend(tmp_path):
    from clbench.run.plan import plan

    cfg = micro_config(tmp_path, model={"backend": "mlx"}, strategies="[ewc]")
    with pytest.raises(ConfigError, match="strategy 'ewc' is not available with model.backend: mlx") as err:
        plan(cfg)
    assert err.value.allowed == ["torch"]
    surprise_on_ewc = micro_config(tmp_path, model={"backend": "mlx"}, strategies="[{name: ewc, with: [surprise]}]")
    with pytest.raises(ConfigError, match="strategy 'ewc' is not available with model.backend: mlx"):
        plan(surprise_on_ewc)
    _, entries = plan(micro_config(tmp_path, model={"backend": "mlx"}, strategies="[all]"))
    assert sorted(e.spec.name for e in entries) == sorted(n for n in registry.names()
                                                           if "mlx" in registry.get(n).backends and n != "importance_tiers")
    assert {"sft", "layer_tiers", "cms", "replay", "joint", "frozen"} <= {e.spec.name for e in entries}
    # importance_tiers' default score (∂L/∂ΔW needs base-weight gradients) is torch's: MLX runs it with lora_abs
    # ... and the refusal says which option keeps it off MLX and the value that runs it there
    with pytest.raises(ConfigError, match=r"'importance_tiers' with options.score: delta_w is not available with "
                       r"model.backend: mlx \(that runs on: torch\); with options \{score: lora_abs\} it runs on mlx"):
        plan(micro_config(tmp_path, model={"backend": "mlx"}, strategies="[importance_tiers]"))
    with pytest.raises(ConfigError, match=r"'cms' with options.form: memory is not available .* with options "
                       r"\{form: adapter\} it runs on mlx, e.g. \{name: cms, options: \{form: adapter\}\}"):
        plan(micro_config(tmp_path, model={"backend": "mlx"}, strategies="[{name: cms, options: {form: memory}}]"))
    _, (entry,) = plan(micro_config(tmp_path, model={"backend": "mlx"},
                                    strategies="[{name: importance_tiers, options: {score: lora_abs}}]"))
    assert entry.options.score == "lora_abs"


def test_streams_with_lm_eval_suites_are_refused_before_training(micro_stream):
    import dataclasses

    from clbench.backends import get_backend
    from clbench.data.streams import ProbeSuite

    notes = micro_stream.tasks[2]
    lm_eval = ProbeSuite("gen", "lm_eval", (), {"task": "clbench_general_mc"})
    stream = dataclasses.replace(micro_stream, tasks=micro_stream.tasks[:2] + (
        dataclasses.replace(notes, probes=notes.probes + (lm_eval,)),))
    get_backend("torch").check_stream(stream)
    with pytest.raises(ConfigError, match="'lm_eval' is not available with model.backend: mlx"):
        get_backend("mlx").check_stream(stream)
    get_backend("mlx").check_stream(micro_stream)


def run_files(root) -> set[str]:
    # a TensorBoard event file is named by its clock time, host and process: the same file for the layout
    return {"tensorboard/events.out.tfevents" if p.parent.name == "tensorboard" else str(p.relative_to(root))
            for p in root.rglob("*") if p.is_file()}


STANDARD = {"config.json", "provenance.json", "eval/reference.json", "eval/base.json", "eval/after_0.json",
            "eval/after_1.json", "eval/after_2.json", "matrix.json", "metrics.json", "train_log.jsonl", "DONE",
            "train_log/task_1.jsonl", "train_log/task_2.jsonl", "checkpoints/task_1/adapter.safetensors",
            "checkpoints/task_1/strategy_state.pt", "checkpoints/task_2/adapter.safetensors",
            "checkpoints/task_2/strategy_state.pt", "predictions/base/medical.qa.jsonl",
            "predictions/after_2/notes.mc.jsonl", "predictions/reference/general.ppl.jsonl"}


def test_mlx_micro_runs_write_the_standard_layout_and_resume(tmp_path, micro_cache, micro_base_dir):
    from clbench.results.aggregate import runs_frame
    from clbench.run.grid import run_grid

    grid = ("[{name: layer_tiers, options: {frequencies: [1, 2]}}, "
            "{name: importance_tiers, label: surprise, options: {warmup_steps: 2, frequencies: [1, 2], score: lora_abs}, with: [surprise]}, "
            "{name: cms, label: cms-adapter, options: {form: adapter, chunk_sizes: [1, 3], scale: inverse_chunk}}]")
    # reset_optimizer false: the resume below must restore the per-tensor AdamW state from the checkpoint
    cfg = micro_config(tmp_path, cache_dir=micro_cache, model={"backend": "mlx"},
                       train={"grad_accum": 2, "reset_optimizer": False}, strategies=grid)
    runs = run_grid(cfg, progress=False, echo=lambda *a: None)
    assert [status for _, status in runs] == ["done"] * 3
    for root, _ in runs:
        assert STANDARD <= run_files(root)
    frame = runs_frame([tmp_path / "results"])
    assert sorted(frame["strategy"]) == ["cms-adapter", "layer_tiers", "surprise"]
    assert np.isfinite(frame["acc"]).all()

    root = runs[0][0]  # layer_tiers over LoRA on the 2-block micro model
    metrics = json.loads((root / "metrics.json").read_text())
    adapter, meta = mx.load(str(root / "checkpoints/task_2/adapter.safetensors"), return_metadata=True)
    elements = sum(v.size for v in adapter.values())
    assert set(adapter) == lora_names([0, 1])  # adapter only: no base weight
    assert elements == metrics["cost"]["trainable_parameters"] == 2 * (4 * 16 * (32 + 32) + 3 * 16 * (32 + 64))
    assert elements * 4 < (root / "checkpoints/task_2/adapter.safetensors").stat().st_size < elements * 4 + 16384
    stored = json.loads(meta["clbench"])
    assert stored["tiers"]["map"] == {n: (0 if ".layers.0." in n else 1) for n in adapter}
    tiers = json.loads((root / "eval/after_1.json").read_text())["diagnostics"]["tiers"]["tiers"]
    assert [t["updates"] for t in tiers] == [6, 3]
    assert metrics["cost"]["optimizer_steps"] == 12
    surprise_log = [json.loads(x) for x in (runs[1][0] / "train_log/task_1.jsonl").open()]
    assert all(r["surprise_aux_l1"] > 0 for r in surprise_log)  # the last block's term, every step
    cms_tiers = json.loads((runs[2][0] / "eval/after_2.json").read_text())["diagnostics"]["tiers"]["tiers"]
    assert [t["steps"] for t in cms_tiers] == [[7, 8, 9, 10, 11, 12], [9, 12]]  # global clock: task 2 = 7..12

    matrix = (root / "matrix.json").read_text()
    for f in ("eval/after_2.json", "DONE"):
        (root / f).unlink()
    shutil.rmtree(root / "checkpoints/task_2")
    statuses = [status for _, status in run_grid(cfg, progress=False, echo=lambda *a: None)]
    assert statuses == ["resumed", "skipped", "skipped"] and (root / "matrix.json").read_text() == matrix


@pytest.fixture(scope="module")
def parity_runs(tmp_path_factory):
    """The parity stream under torch and under MLX (same base model, same seed, sft)."""
    from clbench.run.grid import run_grid

    tmp = tmp_path_factory.mktemp("parity")
    model = {"hidden_size": 64, "intermediate_size": 128, "vocab_size": 512, "pretrain_steps": 400}
    train = {"steps_per_task": 30, "lr": 0.01}
    runs = {}
    for backend in ("torch", "mlx"):
        cfg = micro_config(tmp, cache_dir=tmp / "cache", stream="parity", name=f"parity-{backend}",
                           strategies="[sft]", model={**model, "backend": backend}, train=train)
        [(root, status)] = run_grid(cfg, progress=False, echo=lambda *a: None)
        assert status == "done"
        runs[backend] = root
    return runs


def read(root, name):
    return json.loads((root / name).read_text())


def test_parity_same_layout_and_matrices_and_real_learning(parity_runs):
    torch_run, mlx_run = parity_runs["torch"], parity_runs["mlx"]
    assert run_files(torch_run) == run_files(mlx_run)
    mt, mm = read(torch_run, "matrix.json"), read(mlx_run, "matrix.json")
    assert mt["tasks"] == mm["tasks"] and set(mt["suites"]) == set(mm["suites"])
    for suite in mt["suites"]:
        assert np.array(mt["suites"][suite]["R"]).shape == np.array(mm["suites"][suite]["R"]).shape == (3, 3)
    for m in (mt, mm):
        R = m["suites"]["qa"]["R"]
        assert R[1][1] >= 0.9 and R[2][2] >= 0.9  # each task learned, the last one included
        assert m["suites"]["qa"]["base"][0] >= 0.9  # the base model knows 'general'


def test_parity_base_rows_agree_and_training_sees_the_same_data(parity_runs):
    torch_run, mlx_run = parity_runs["torch"], parity_runs["mlx"]
    bt, bm = read(torch_run, "eval/base.json")["scores"], read(mlx_run, "eval/base.json")["scores"]
    for task in bt:
        assert bt[task]["qa"] == bm[task]["qa"]  # same converted weights: identical exact match
        assert bt[task]["ppl"] == pytest.approx(bm[task]["ppl"], rel=1e-4)
        mc_t = [json.loads(x)["scores"] for x in (torch_run / f"predictions/base/{task}.mc.jsonl").open()]
        mc_m = [json.loads(x)["scores"] for x in (mlx_run / f"predictions/base/{task}.mc.jsonl").open()]
        np.testing.assert_allclose(mc_m, mc_t, atol=1e-3)
        qa_t = [json.loads(x)["prediction"] for x in (torch_run / f"predictions/base/{task}.qa.jsonl").open()]
        qa_m = [json.loads(x)["prediction"] for x in (mlx_run / f"predictions/base/{task}.qa.jsonl").open()]
        assert qa_t == qa_m
    lt = [json.loads(x) for x in (torch_run / "train_log.jsonl").open()]
    lm = [json.loads(x) for x in (mlx_run / "train_log.jsonl").open()]
    assert [r["lr"] for r in lt] == [r["lr"] for r in lm] and [r["tokens"] for r in lt] == [r["tokens"] for r in lm]
    # step 1: LoRA's B is zero on both sides, so the model (and its loss on the same batch) is the base model's
    assert lm[0]["loss"] == pytest.approx(lt[0]["loss"], rel=1e-4)


def test_mlx_refuses_explicit_autocast_and_resolves_auto_to_none(tmp_path):
    with pytest.raises(ConfigError) as err:
        MLXBackend().start(micro_config(tmp_path, model={"backend": "mlx", "autocast": "bfloat16"}))
    assert "model.autocast" in str(err.value) and "model.dtype" in str(err.value)
    extra = MLXBackend().start(micro_config(tmp_path, model={"backend": "mlx", "autocast": "auto"}))
    assert extra["numerics"]["autocast"] == "none"
