"""One run end to end on the micro stream: layout, provenance, checkpoints, resume, skip, reproducibility."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from clbench.errors import ConfigError
from clbench.results.files import RunFiles
from clbench.run.grid import run_grid
from clbench.strategies.sft import SFT
from clbench.train import registry
from tests.conftest import micro_config

QUIET = {"progress": False, "echo": lambda *a: None}


def _run(cfg):
    ((path, status),) = run_grid(cfg, **QUIET)
    return RunFiles(path), status


def _numbers(files: RunFiles) -> dict:
    """Everything a run computed except wall-clock times."""
    metrics = json.loads(files.metrics.read_text())
    metrics["cost"] = {k: v for k, v in metrics["cost"].items() if not k.endswith("seconds")}
    return {"matrix": json.loads(files.matrix.read_text()), "metrics": metrics,
            "adapter": {k: v.tolist() for k, v in load_file(files.checkpoint(2) / "adapter.safetensors").items()}}


def test_run_layout_and_contents(micro_cfg, micro_stream):
    files, status = _run(micro_cfg)
    assert status == "done" and files.done.exists()
    T = len(micro_stream.tasks)
    matrix = json.loads(files.matrix.read_text())
    assert matrix["tasks"] == ["general", "medical", "notes"]
    for suite in ("qa", "mc", "ppl"):
        R = matrix["suites"][suite]["R"]
        assert len(R) == T and all(len(r) == T for r in R)
        assert R[0] == matrix["suites"][suite]["base"]  # the pretrained task's row is the base model's
    # provenance names every version the issue asks for, and the git revision
    prov = json.loads(files.provenance.read_text())
    assert {"clbench", "torch", "transformers", "peft"} <= {k for k, v in prov["packages"].items() if v}
    assert prov["python"] and "commit" in prov["git"]
    config = json.loads(files.config.read_text())
    assert config["seed"] == 0 and config["strategy"]["name"] == "sft" and config["train"]["steps_per_task"] == 6
    # one log line per optimizer step of each trained task, with the fields the issue asks for
    log = [json.loads(l) for l in files.train_log.read_text().splitlines()]
    assert len(log) == 2 * micro_cfg.train.steps_per_task
    assert {"loss", "lr", "step_time", "tokens", "task", "step"} <= set(log[0])
    assert [r["step"] for r in log] == list(range(1, 7)) * 2
    # probe-level predictions for every task and suite after every trained task
    for t in (1, 2):
        for task in ("general", "medical", "notes"):
            for suite in ("qa", "mc", "ppl"):
                lines = (files.predictions(t) / f"{task}.{suite}.jsonl").read_text().splitlines()
                assert len(lines) == len(next(p for p in micro_stream.tasks[["general", "medical", "notes"].index(task)].probes if p.name == suite).items)


def test_checkpoints_are_adapter_only(micro_cfg):
    files, _ = _run(micro_cfg)
    path = files.checkpoint(1) / "adapter.safetensors"
    tensors = load_file(path)
    assert tensors and all("lora_" in k for k in tensors)
    n = sum(t.numel() for t in tensors.values())
    assert n == json.loads(files.metrics.read_text())["cost"]["trainable_parameters"]
    header = path.stat().st_size - 4 * n
    assert 0 < header < 64 * 1024  # fp32 adapter plus a small JSON header, nothing else
    with safe_open(path, "pt") as f:
        meta = json.loads(f.metadata()["clbench"])
    assert meta["task"] == "medical" and meta["strategy"] == "sft"
    assert not files.checkpoint(0).exists()  # the pretrained task trains nothing


def test_rerun_skips_and_other_config_is_refused(micro_cfg, tmp_path):
    files, _ = _run(micro_cfg)
    before = files.metrics.read_bytes()
    assert _run(micro_cfg)[1] == "skipped"
    assert files.metrics.read_bytes() == before
    other = micro_config(tmp_path, cache_dir=micro_cfg.cache_dir, train={"lr": 1e-3})
    with pytest.raises(ConfigError, match="different config"):
        run_grid(other, **QUIET)


def test_same_config_and_seed_give_the_same_numbers(micro_cache, micro_base_dir, tmp_path):
    a, _ = _run(micro_config(tmp_path / "a", cache_dir=micro_cache))
    b, _ = _run(micro_config(tmp_path / "b", cache_dir=micro_cache))
    assert _numbers(a) == _numbers(b)
    c, _ = _run(micro_config(tmp_path / "c", cache_dir=micro_cache, seeds="[1]"))
    assert _numbers(c)["adapter"] != _numbers(a)["adapter"]  # the seed matters


class Crash(Exception):
    pass


@pytest.fixture
def crashy():
    """A test strategy: SFT that dies before a chosen task while ``crash_before`` is set."""

    @registry.register("_crashy_sft")
    class CrashySFT(SFT):
        crash_before = None

        def before_task(self, task, model):
            if task.index == CrashySFT.crash_before:
                raise Crash(task.name)

    yield CrashySFT
    registry._STRATEGIES.pop("_crashy_sft")


def test_killed_run_resumes_from_last_finished_task(crashy, micro_cache, micro_base_dir, tmp_path):
    cfg = micro_config(tmp_path / "x", cache_dir=micro_cache, strategies="[_crashy_sft]")
    crashy.crash_before = 2
    with pytest.raises(Crash):
        run_grid(cfg, **QUIET)
    files = RunFiles(next((tmp_path / "x" / "results").rglob("seed_0")))
    assert files.after(1).exists() and not files.after(2).exists() and not files.done.exists()
    kept = files.after(1).read_bytes()
    crashy.crash_before = None
    resumed, status = _run(cfg)
    assert status == "resumed" and files.after(1).read_bytes() == kept  # finished work untouched
    clean, _ = _run(micro_config(tmp_path / "y", cache_dir=micro_cache, strategies="[_crashy_sft]"))
    assert _numbers(resumed) == _numbers(clean)


def test_frozen_lora_base_row_equals_base_model(micro_cfg, micro_model, micro_stream):
    """LoRA starts as the identity: the prepared model scores exactly like the base checkpoint."""
    from clbench.eval.rows import evaluate_row
    from clbench.eval.torch_lm import TorchLM

    model, tok = micro_model
    with TorchLM(model, tok) as lm:
        plain = evaluate_row(lm, micro_stream, micro_cfg.eval, progress=False)["scores"]
    files, _ = _run(micro_cfg)
    assert json.loads(files.base.read_text())["scores"] == plain


def test_probe_scores_match_direct_computation(micro_model, micro_stream):
    """The multiple-choice scorer picks the argmax of summed continuation log-probs, computed here by hand."""
    from clbench.eval.probes import score_multiple_choice
    from clbench.eval.torch_lm import TorchLM

    model, tok = micro_model
    suite = next(p for p in micro_stream.tasks[0].probes if p.kind == "multiple_choice")
    with TorchLM(model, tok) as lm:
        res = score_multiple_choice(suite, lm)
    item = suite.items[0]
    scores = []
    for choice in item["choices"]:
        ctx = tok(item["prompt"])["input_ids"]
        cont = tok(" " + choice, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([ctx + cont])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
        scores.append(sum(float(logp[len(ctx) - 1 + k, c]) for k, c in enumerate(cont)))
    assert res.items[0]["scores"] == pytest.approx(scores, abs=1e-4)
    assert res.items[0]["prediction"] == max(range(len(scores)), key=scores.__getitem__)


FOUR_TASKS = """name: micro4
version: 1
primary_metric: qa
generator_seed: 0
tasks:
  - {name: general, pretrained: true, generated: {domain: general, entities: 4}}
  - {name: medical, generated: {domain: medical, entities: 2}}
  - {name: notes, generated: {domain: notes, entities: 2}}
  - {name: clinic, generated: {domain: medical, entities: 2, seed: 7}}
"""


def test_resume_after_two_trained_tasks_continues_from_the_last_one(crashy, micro_cache, micro_base_dir, tmp_path):
    """Killed after *two* trained tasks: the resume must load the adapter, strategy state and optimizer
    state of the second (the last finished), not the first, and continue the global step count —
    a run killed after one trained task cannot tell "last" from "first"."""
    (tmp_path / "micro4.yaml").write_text(FOUR_TASKS)

    def cfg(folder):
        return micro_config(tmp_path / folder, cache_dir=micro_cache, strategies="[_crashy_sft]",
                            stream=tmp_path / "micro4.yaml", model={"path": micro_base_dir},
                            train={"reset_optimizer": "false"})

    crashy.crash_before = 3
    with pytest.raises(Crash):
        run_grid(cfg("x"), **QUIET)
    files = RunFiles(next((tmp_path / "x" / "results").rglob("seed_0")))
    assert files.after(2).exists() and not files.after(3).exists()
    crashy.crash_before = None
    resumed, status = _run(cfg("x"))
    clean, _ = _run(cfg("y"))
    assert status == "resumed"
    steps = micro_config(tmp_path).train.steps_per_task
    for run in (resumed, clean):
        log = [json.loads(line) for line in run.train_log.read_text().splitlines()]
        assert [r["global_step"] for r in log] == list(range(1, 3 * steps + 1))
        assert [r["task"] for r in log] == [1] * steps + [2] * steps + [3] * steps
    assert json.loads(resumed.matrix.read_text()) == json.loads(clean.matrix.read_text())
    last = {k: v.tolist() for k, v in load_file(resumed.checkpoint(3) / "adapter.safetensors").items()}
    assert last == {k: v.tolist() for k, v in load_file(clean.checkpoint(3) / "adapter.safetensors").items()}
    log_losses = [[json.loads(line)["loss"] for line in run.train_log.read_text().splitlines()]
                  for run in (resumed, clean)]
    assert log_losses[0] == log_losses[1]
