"""What a run records about its model, and the threads the embedded model is built with."""

from __future__ import annotations

import torch

from clbench.config.experiment import EMBEDDED_ONLY, ModelConfig, model_record
from clbench.results.aggregate import _comparable
from tests.conftest import micro_config


def test_a_checkpoint_run_records_no_embedded_model_field_and_old_records_still_compare():
    real = model_record(ModelConfig(path="/models/x", hidden_size=32))
    assert not set(EMBEDDED_ONLY) & set(real) and real["path"] == "/models/x" and real["seed"] == 0
    embedded = model_record(ModelConfig(hidden_size=32))
    assert embedded["hidden_size"] == 32 and set(EMBEDDED_ONLY) <= set(embedded)
    # a config.json written before this rule (every field) compares equal to one written after
    old = {"seed": 1, "model": {**ModelConfig(path="/models/x").__dict__}, "train": {"lr": 0.1}}
    new = {"seed": 2, "model": real | {"hidden_size": 128}, "train": {"lr": 0.1}}
    assert "hidden_size" in old["model"]
    assert _comparable(old) == _comparable({**new, "model": model_record(ModelConfig(path="/models/x"))})


def test_a_resumed_run_stored_with_the_old_record_is_the_same_experiment(tmp_path):
    from clbench.config.experiment import config_dict
    from clbench.data.streams import load_stream
    from clbench.run.one_run import run_record, same_experiment
    from clbench.run.plan import plan, run_spec

    cfg = micro_config(tmp_path, model={"path": str(tmp_path)})
    _, (entry,) = plan(cfg)
    record = run_record(run_spec(cfg, load_stream("micro"), entry, 0, tmp_path))
    assert "hidden_size" not in record["model"]
    stored = {**record, "model": config_dict(cfg.model)}  # as written before: with the ignored fields
    assert stored["model"]["hidden_size"] == 32
    assert same_experiment(stored, record, entry)
    assert not same_experiment({**stored, "model": {**stored["model"], "max_length": 7}}, record, entry)


def test_the_embedded_model_is_built_with_train_threads(tmp_path, monkeypatch):
    from clbench.modeling import tiny
    from clbench.run.grid import base_model_dir

    seen = []
    monkeypatch.setattr(tiny, "_build", lambda cfg, stream, target, progress: seen.append(torch.get_num_threads())
                        or target)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cfg = micro_config(tmp_path, train={"threads": 1})
        from clbench.data.streams import load_stream

        base_model_dir(cfg, load_stream("micro"), progress=False)
        assert seen == [1] and torch.get_num_threads() == 2  # set for the build, restored after it
        base_model_dir(micro_config(tmp_path / "b", train={"threads": 0}), load_stream("micro"), progress=False)
        assert seen == [1, 2]  # 0: torch's setting as it was
    finally:
        torch.set_num_threads(before)
