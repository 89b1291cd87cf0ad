"""Mixed precision (``model.autocast``): bfloat16 matrix products over float32 weights, in every forward
pass of a run, resolved per machine and recorded (``clbench.modeling.loading.pick_autocast``,
``TorchBackend.compute``)."""

import json
import math
import shutil

import pytest
import torch

from clbench.backends.torch_backend import TorchBackend
from clbench.errors import ConfigError
from clbench.modeling import loading
from clbench.modeling.loading import pick_autocast
from clbench.run.grid import run_grid
from clbench.train.types import LossOutput
from tests.conftest import micro_config

QUIET = {"progress": False, "echo": lambda *a: None}
CPU = torch.device("cpu")


def test_none_and_explicit_values_resolve_as_written():
    assert pick_autocast("none", CPU, torch.float32) is None
    assert pick_autocast("bfloat16", CPU, torch.float32) is torch.bfloat16


def test_auto_is_bf16_only_where_the_hardware_computes_it_and_the_weights_are_fp32(monkeypatch):
    monkeypatch.setattr(loading, "native_bf16", lambda device: True)
    assert pick_autocast("auto", CPU, torch.float32) is torch.bfloat16
    assert pick_autocast("auto", CPU, torch.bfloat16) is None  # bf16 weights already compute in bf16
    monkeypatch.setattr(loading, "native_bf16", lambda device: False)
    assert pick_autocast("auto", CPU, torch.float32) is None  # emulated bf16 would be slower than fp32


def test_native_bf16_reads_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not loading.native_bf16(CPU)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert loading.native_bf16(CPU)


def test_an_unknown_value_names_the_field_and_the_allowed_values(tmp_path):
    with pytest.raises(ConfigError) as err:
        pick_autocast("fp16", CPU, torch.float32)
    assert "model.autocast" in str(err.value) and "bfloat16" in str(err.value)
    with pytest.raises(ConfigError) as err:  # the config loader refuses it before any run starts
        micro_config(tmp_path, model={"autocast": "fp8"})
    assert "autocast" in str(err.value)


def _linear_output_dtypes(model):
    seen = []
    hooks = [m.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
             for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return seen, hooks


@pytest.mark.parametrize("autocast", ["none", "bfloat16"])
def test_training_step_computes_in_bf16_and_keeps_fp32_weights_and_gradients(micro_model, tmp_path, autocast):
    model, tok = micro_model
    cfg = micro_config(tmp_path, model={"autocast": autocast})
    backend = TorchBackend()
    backend.start(cfg)
    trainable = {n: p for n, p in model.named_parameters()}
    ids = torch.tensor([tok("the patient takes one pill")["input_ids"]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    seen, hooks = _linear_output_dtypes(model)
    loss, _, grads = backend.forward_backward(model, trainable, lambda m, b: LossOutput(m(**b).loss), [batch], None)
    for h in hooks:
        h.remove()
    assert math.isfinite(loss)
    assert loss > 0
    want = torch.bfloat16 if autocast == "bfloat16" else torch.float32
    assert seen and set(seen) == {want}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert grads and all(g.dtype == torch.float32 for g in grads.values())
    # outside the step nothing is autocast any more
    seen, hooks = _linear_output_dtypes(model)
    model(**batch)
    assert set(seen) == {torch.float32}


def test_probe_view_computes_in_bf16_inside_and_scores_close_to_fp32(micro_model):
    from clbench.eval.torch_lm import TorchLM

    model, tok = micro_model
    pairs = [("The capital of France is", " Paris"), ("The patient takes", " one pill a day")]
    with TorchLM(model, tok, batch_size=2) as lm:
        exact = lm.loglikelihood(pairs)
    seen, hooks = _linear_output_dtypes(model)
    with TorchLM(model, tok, batch_size=2, autocast=torch.bfloat16) as lm:
        mixed = lm.loglikelihood(pairs)
    for h in hooks:
        h.remove()
    assert set(seen) == {torch.bfloat16}
    assert mixed != exact  # bf16 products: not bit-equal ...
    assert mixed == pytest.approx(exact, rel=0.05, abs=0.5)  # ... but the same log-likelihoods to bf16 precision
    seen, hooks = _linear_output_dtypes(model)
    with TorchLM(model, tok, batch_size=2) as lm:  # the autocast context ended with the view
        assert lm.loglikelihood(pairs) == exact
    assert set(seen) == {torch.float32}


def test_a_run_records_its_resolved_precision_and_caches_rows_per_precision(tmp_path, micro_cache, micro_base_dir):
    cache = tmp_path / "cache"
    shutil.copytree(micro_base_dir, cache / micro_base_dir.relative_to(micro_cache))
    runs = {}
    for autocast in ("none", "bfloat16"):
        cfg = micro_config(tmp_path, cache_dir=cache, name=autocast, model={"autocast": autocast})
        ((runs[autocast], _),) = run_grid(cfg, **QUIET)
    prov = {a: json.loads((r / "provenance.json").read_text())["numerics"] for a, r in runs.items()}
    assert prov["none"] == {"device": "cpu", "dtype": "float32", "autocast": "none"}
    assert prov["bfloat16"] == {"device": "cpu", "dtype": "float32", "autocast": "bfloat16"}
    base = {a: json.loads((r / "eval" / "base.json").read_text()) for a, r in runs.items()}
    assert base["none"]["cache_file"] != base["bfloat16"]["cache_file"]  # a bf16 row never stands in for fp32
    assert len(list((cache / "rows").glob("base-*.json"))) == 2
    matrices = {a: json.loads((r / "matrix.json").read_text()) for a, r in runs.items()}
    assert matrices["none"] != matrices["bfloat16"]  # training and evaluation both ran in bf16


def test_a_record_written_before_the_field_existed_is_the_same_experiment_as_no_autocast(tmp_path):
    from clbench.config.experiment import strategy_specs
    from clbench.run import one_run
    from clbench.run.plan import resolve_entry, run_spec

    cfg = micro_config(tmp_path)
    entry = resolve_entry(strategy_specs(cfg, ["sft"])[0], cfg)
    record = json.loads(json.dumps(one_run.run_record(run_spec(cfg, _stream(cfg), entry, 0, tmp_path))))
    older = json.loads(json.dumps(record))
    del older["model"]["autocast"]
    assert one_run.same_experiment(older, record, entry)
    newer = json.loads(json.dumps(record))
    newer["model"]["autocast"] = "bfloat16"
    assert not one_run.same_experiment(newer, record, entry)


def _stream(cfg):
    from clbench.data.streams import load_stream

    return load_stream(cfg.stream)


def test_perf_in_bf16_holds_both_scorers_to_the_same_choices_not_to_float32_rounding():
    from clbench.bench.eval_speed import agreement

    items = [{"choices": ["a", "b"]}]
    ours, theirs = [-1.0, -2.0], [-1.001, -2.0]
    assert not agreement("mc", ours, theirs, items)["identical"]  # float32: within rel 1e-5 / abs 1e-4
    assert agreement("mc", [-1.00005, -2.0], [-1.0, -2.0], items)["identical"]  # float32 rounding of a sum
    assert agreement("mc", ours, theirs, items, tolerance=None)["identical"]
    assert not agreement("mc", [-2.0, -1.0], theirs, items, tolerance=None)["identical"]  # another choice


def test_perf_tells_hflm_the_precision_since_hflm_switches_an_outer_autocast_off(micro_model):
    from clbench.bench.eval_speed import hflm

    model, tok = micro_model
    assert hflm(model, tok, 2, torch.bfloat16).mixed_precision_dtype is torch.bfloat16
    assert hflm(model, tok, 2).mixed_precision_dtype is None
    seen, hooks = _linear_output_dtypes(model)
    lm = hflm(model, tok, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what the first bf16 comparison did: HFLM ran in fp32
        lm._model_call(torch.tensor([tok("the patient")["input_ids"]]))
    for h in hooks:
        h.remove()
    assert set(seen) == {torch.float32}
