"""Issue 23, the experiment and the command line: duplicates and bounds refused before anything is
written, and a ``--set`` value named as what the user typed, never as the config file."""

from __future__ import annotations

import math

import pytest
import torch

from clbench.errors import ConfigError
from tests.cli_helpers import micro_args
from tests.test_bad_names import refused_leaving_nothing


def args_without(tmp_path, *drop: str, extra=()) -> list[str]:
    """``micro_args`` with the flags in ``drop`` (and their values) removed, plus ``extra``."""
    args, out = micro_args(tmp_path / "results", tmp_path / "cache"), []
    skip = False
    for a in args:
        if skip:
            skip = False
        elif a in drop:
            skip = True
        else:
            out.append(a)
    return [*out, *extra]


@pytest.mark.parametrize(("extra", "message"), [
    (("--seeds", "0,1,0"), "--seeds: seed 0 appears twice (seeds[0] and seeds[2]); each seed is one run"),
    (("--seeds", "99999999999999999999999"), "--seeds[0]: must be <= 4294967295, got 99999999999999999999999"),
    (("--seeds", "-1"), "--seeds[0]: must be >= 0, got -1"),
    (("--jobs", "0"), "--jobs: must be >= 1, got 0"),
    (("--set", "train.lr=[0.1"), ("--set train.lr: malformed YAML: expected ',' or ']', but got '<stream end>' "
                                 "(in the value '[0.1')")),
    (("--set", "name=*x"), "--set name: malformed YAML: found undefined alias 'x' (in the value '*x')"),
    (("--set", "strategies=[{name: sft, with: [surprise, surprise]}]"),
     ("strategies[sft].with[1]: plugin 'surprise' is also with[0]; a plugin is added once (give it the options it "
     "needs there)")),
    (("--set", "strategies=[{name: frozen, with: [surprise]}]"),
     ("strategies[frozen].with: strategy 'frozen' trains nothing, so a plugin (which changes training) would change "
     "nothing; remove 'with'")),
])
def test_refused_before_anything_is_written(extra, message, tmp_path, capsys):
    drop = {"--seeds": "--seeds", "--jobs": "--jobs"}.get(extra[0], "--strategies" if "strategies=" in extra[1] else "")
    err = refused_leaving_nothing(capsys, args_without(tmp_path, drop, extra=extra), tmp_path)
    assert err == message


def test_a_set_value_is_not_blamed_on_the_config_file(tmp_path, capsys):
    config = tmp_path / "exp.yaml"
    config.write_text("name: exp\nstream: micro\ntrain: {lr: 0.001}\n")
    args = args_without(tmp_path, "--stream", extra=("--set", "train.lr=0"))
    err = refused_leaving_nothing(capsys, [args[0], str(config), *args[1:]], tmp_path)
    assert err == "--set train.lr: must be > 0, got 0.0"
    from clbench.config.experiment import load_config

    config.write_text("name: exp\nstream: micro\ntrain: {lr: 0}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(config, ["train.steps_per_task=3"])
    assert str(exc.value) == f"{config}.train.lr: must be > 0, got 0.0"


def test_a_nan_loss_with_no_token_to_learn_blames_max_length_not_the_learning_rate():
    from clbench.errors import DivergenceError
    from clbench.train.step import check_finite

    empty = {"labels": torch.tensor([[1, -100, -100], [2, -100, -100]])}
    with pytest.raises(ConfigError, match=r"^model\.max_length: loss is nan at task 1 \('notes'\) step 3 because no "
                                          r"record of the step keeps a token to learn"):
        check_finite("task 1 ('notes')", 3, math.nan, [empty])
    learnable = {"labels": torch.tensor([[1, 5, -100]])}
    with pytest.raises(DivergenceError, match="training diverged; lower train.lr"):
        check_finite("task 1 ('notes')", 3, math.nan, [learnable])


def test_pretraining_with_no_token_to_learn_says_max_length(micro_stream, tmp_path):
    from clbench.modeling.tiny import build_base_model
    from tests.conftest import micro_config

    cfg = micro_config(tmp_path, model={"max_length": 2, "pretrain_steps": 2})
    stream = micro_stream.__class__(micro_stream.spec, micro_stream.tasks, ())  # no background: prompts only
    stream = type(stream)(stream.spec, tuple(t if not t.pretrained else t.__class__(
        t.name, tuple(r for r in t.train if "prompt" in r), t.probes, True) for t in stream.tasks))
    with pytest.raises(ConfigError, match=r"^model\.max_length: no pretraining record keeps a token to learn within "
                                          r"model\.max_length=2 tokens"):
        build_base_model(cfg.model, stream, tmp_path / "cache", progress=False)
