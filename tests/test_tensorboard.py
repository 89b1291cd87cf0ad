"""TensorBoard event files of a run hold the logged scalars (read back with tensorboard's EventAccumulator)."""

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from clbench.results.files import RunFiles
from clbench.results.tensorboard import tensorboard_command
from clbench.run.grid import run_grid
from tests.conftest import micro_config


def scalars(run_root):
    acc = EventAccumulator(str(run_root / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_event_files_hold_loss_lr_tiers_and_probe_scores(micro_cache, micro_base_dir, tmp_path):
    cfg = micro_config(tmp_path, cache_dir=micro_cache, strategies="[layer_tiers]")
    ((path, _),) = run_grid(cfg, progress=False, echo=lambda *a: None)
    files = RunFiles(path)
    got = scalars(path)
    log = [json.loads(line) for line in files.train_log.read_text().splitlines()]
    assert len(log) == 12  # 2 trained tasks x 6 steps
    assert got["train/loss"] == [(r["global_step"], pytest.approx(r["loss"], rel=1e-6)) for r in log]
    assert got["train/lr"] == [(r["global_step"], pytest.approx(r["lr"], rel=1e-6)) for r in log]
    assert got["train/updated_elements"] == [(r["global_step"], r["updated_elements"]) for r in log]
    n_tiers = len(json.loads(files.after(1).read_text())["diagnostics"]["tiers"]["tiers"])
    for k in range(n_tiers):
        assert got[f"tiers/tier_{k}_updated"] == [(r["global_step"], float(k in r["active_tiers"])) for r in log]
        drifts = [json.loads(files.after(t).read_text())["diagnostics"]["tiers"]["tiers"][k]["drift"] for t in (1, 2)]
        assert got[f"tiers/tier_{k}_drift"] == [(6, pytest.approx(drifts[0])), (12, pytest.approx(drifts[1]))]
    base = json.loads(files.base.read_text())["scores"]
    rows = [json.loads(files.after(t).read_text())["scores"] for t in (1, 2)]
    for task in ("general", "medical", "notes"):
        assert got[f"probe/qa/{task}"] == [(0, pytest.approx(base[task]["qa"])), (6, pytest.approx(rows[0][task]["qa"])),
                                           (12, pytest.approx(rows[1][task]["qa"]))]
    assert tensorboard_command([tmp_path / "results"]) == f"tensorboard --logdir {tmp_path / 'results'}"


def test_tensorboard_can_be_switched_off(micro_cache, micro_base_dir, tmp_path):
    cfg = micro_config(tmp_path, cache_dir=micro_cache, **{"log.tensorboard": "false", "train.steps_per_task": 1})
    ((path, _),) = run_grid(cfg, progress=False, echo=lambda *a: None)
    assert RunFiles(path).done.exists() and not (path / "tensorboard").exists()
    assert tensorboard_command([tmp_path / "results"]) is None
