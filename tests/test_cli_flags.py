"""Issue 25 item 7: a shortcut flag and a ``--set`` of the same field are refused together (before, the flag
won without a word); each alone sets the field."""

from __future__ import annotations

import pytest

from clbench.cli import _config, build_parser
from tests.test_bad_names import refused_leaving_nothing


def config_of(argv: list[str]):
    return _config(build_parser().parse_args(["run", *argv]))


@pytest.mark.parametrize(("argv", "message"), [
    (["--strategies", "sft,replay", "--set", "strategies=[ewc]"],
     "--strategies: given together with --set strategies, which sets the same field; give one of them"),
    (["--set", "seeds=[3]", "--seeds", "1,2"],
     "--seeds: given together with --set seeds, which sets the same field; give one of them"),
    (["--executor", "local", "--set", "executor={kind: ray}"],
     "--executor: given together with --set executor, which sets the same field; give one of them"),
])
def test_a_flag_and_a_set_of_the_same_field_are_refused_and_nothing_is_written(argv, message, tmp_path, capsys):
    args = ["run", *argv, "--results", str(tmp_path / "results"), "--set", f"cache_dir={tmp_path / 'cache'}",
            "--stream", "micro", "--no-report", "--quiet"]
    assert refused_leaving_nothing(capsys, args, tmp_path) == message
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()


def test_each_alone_sets_the_strategies():
    assert config_of(["--strategies", "sft,replay"]).strategies == ("sft", "replay")
    assert config_of(["--set", "strategies=[ewc, {name: sft, label: s2}]"]).strategies == (
        "ewc", {"name": "sft", "label": "s2"})
    # the smoke preset's strategies are not the user's --set: the flag replaces them
    assert config_of(["--smoke", "--strategies", "sft,replay"]).strategies == ("sft", "replay")


def test_a_set_of_another_part_of_the_same_section_is_not_a_clash():
    cfg = config_of(["--executor", "local", "--set", "executor={num_cpus: 2}", "--address", "auto"])
    assert (cfg.executor.kind, cfg.executor.num_cpus, cfg.executor.address) == ("local", 2, "auto")
