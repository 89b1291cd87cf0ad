"""A new contributor's first minutes: the smoke preset and ``clbench new strategy``.

The scaffold's own test is run here as a user runs it, on the strategy the scaffold wrote.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from clbench.config.presets import MICRO_MODEL, SMOKE
from clbench.train import registry
from tests.cli_helpers import cli


def test_smoke_is_the_micro_model_on_the_micro_stream_and_the_users_flags_win(tmp_path):
    from clbench.cli import _config, build_parser

    args = build_parser().parse_args(["run", "--smoke", "--strategies", "sft,replay", "--set",
                                      "train.steps_per_task=20", "--results", str(tmp_path)])
    cfg = _config(args)
    assert cfg.stream == "micro" and cfg.seeds == (0,) and cfg.name == "smoke"
    assert {k: getattr(cfg.model, k) for k in MICRO_MODEL} == MICRO_MODEL
    assert cfg.strategies == ("sft", "replay") and cfg.train.steps_per_task == 20 and cfg.results_dir == str(tmp_path)
    assert cfg.train.batch_size == SMOKE["train"]["batch_size"] and cfg.train.threads == 1
    plain = _config(build_parser().parse_args(["run"]))
    assert plain.model.hidden_size == 128 and plain.stream == "default"  # without --smoke: the defaults


def _import(path: Path, module: str):
    spec = importlib.util.spec_from_file_location(module, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[module] = mod
    spec.loader.exec_module(mod)
    return mod


def test_the_scaffold_writes_a_strategy_whose_own_test_passes(tmp_path, micro_cache, micro_base_dir, monkeypatch,
                                                               capsys):
    root = tmp_path / "checkout"
    (root / "strategies").mkdir(parents=True)
    (root / "strategies" / "__init__.py").write_text("")
    rc, out, _ = cli(["new", "strategy", "scaffolded", "--root", str(root)], capsys)
    assert rc == 0 and "clbench run --smoke --strategies sft,scaffolded" in out
    strategy, test = root / "strategies" / "scaffolded.py", root / "tests" / "test_strategy_scaffolded.py"
    assert strategy.is_file() and test.is_file()
    # what an editable install does with a new file in strategies/: a module of clbench.strategies
    try:
        _import(strategy, "clbench.strategies.scaffolded")
        cls = registry.get("scaffolded")
        assert cls.Options().penalty == 0.0 and cls.Options().lora.rank > 0  # its own option beside LoRA's
        assert cls.describe().startswith("scaffolded: LoRA fine-tuning plus penalty")
        monkeypatch.setenv("CLBENCH_CACHE", str(micro_cache))  # the micro base model, built once per session
        tests = _import(test, "test_strategy_scaffolded")
        tests.test_scaffolded_trains_on_the_smoke_preset(tmp_path / "run")
        # the same name again is refused, and nothing is overwritten
        before = strategy.read_text()
        rc, _, err = cli(["new", "strategy", "scaffolded", "--root", str(root)], capsys)
        assert rc == 2 and "already registered" in err and strategy.read_text() == before
    finally:
        registry._STRATEGIES.pop("scaffolded", None)
        sys.modules.pop("clbench.strategies.scaffolded", None)
        sys.modules.pop("test_strategy_scaffolded", None)


@pytest.mark.parametrize("name,message", [("My-Method", "not a strategy name"), ("class", "not a strategy name"),
                                          ("sft", "already registered")])
def test_the_scaffold_refuses_bad_and_taken_names(name, message, tmp_path, capsys):
    (tmp_path / "strategies").mkdir()
    (tmp_path / "strategies" / "__init__.py").write_text("")
    rc, _, err = cli(["new", "strategy", name, "--root", str(tmp_path)], capsys)
    assert rc == 2 and message in err
    assert sorted(p.name for p in (tmp_path / "strategies").iterdir()) == ["__init__.py"]


def test_the_scaffold_refuses_a_folder_that_is_not_a_checkout(tmp_path, capsys):
    rc, _, err = cli(["new", "strategy", "fresh", "--root", str(tmp_path)], capsys)
    assert rc == 2 and "no strategies/ package here" in err and not any(tmp_path.iterdir())
