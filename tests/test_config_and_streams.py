"""Bad input fails early with the file, the field and the allowed values."""

import json

import pytest

from clbench.cli import main
from clbench.config.experiment import load_config, parse_override, strategy_specs
from clbench.data.streams import load_stream
from clbench.errors import ConfigError
from clbench.train import registry


def test_defaults_yaml_and_overrides_precedence(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text("name: e1\ntrain: {lr: 0.002, steps_per_task: 7}\nstream: ../s.yaml\n")
    cfg = load_config(f, ["train.lr=1e-3"])
    assert cfg.train.lr == 0.001  # CLI beats YAML; "1e-3" is a number, not a string
    assert cfg.train.steps_per_task == 7  # YAML beats default
    assert cfg.train.batch_size == 32  # default
    assert cfg.stream == str((tmp_path / "../s.yaml").resolve())  # relative to the file


def test_unknown_key_names_file_field_and_suggestion(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text("train: {lrr: 0.1}\n")
    with pytest.raises(ConfigError) as err:
        load_config(f)
    msg = str(err.value)
    assert str(f) in msg and "lrr" in msg and "did you mean 'lr'" in msg and "steps_per_task" in msg


def test_wrong_type_and_literal_values():
    with pytest.raises(ConfigError, match="train.steps_per_task.*expected int"):
        load_config(None, ["train.steps_per_task=many"])
    with pytest.raises(ConfigError, match="allowed: constant, cosine, linear"):
        load_config(None, ["train.schedule=exponential"])


def test_malformed_yaml_reports_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("name: x\ntrain:\n  lr: [1,\n")
    with pytest.raises(ConfigError, match=rf"{f.name}:\d+: malformed YAML"):
        load_config(f)


def test_override_syntax():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("nothing")


def test_unknown_strategy_lists_known_ones():
    with pytest.raises(ConfigError) as err:
        registry.get("sftt")
    assert "did you mean 'sft'" in str(err.value) and "sft" in err.value.allowed


def test_duplicate_labels_rejected():
    cfg = load_config(None, ["strategies=[sft, sft]"])
    with pytest.raises(ConfigError, match="appears twice"):
        strategy_specs(cfg, registry.names())


def test_strategy_options_are_validated():
    from clbench.config.experiment import StrategySpec
    from clbench.run.plan import resolve_entry

    cfg = load_config(None)
    with pytest.raises(ConfigError, match=r"strategies\[sft\]\.options\.lora: unknown key 'rnk'.*did you mean 'rank'"):
        resolve_entry(StrategySpec("sft", {"lora": {"rnk": 4}}), cfg)
    with pytest.raises(ConfigError, match="allowed: full, lora"):
        resolve_entry(StrategySpec("sft", {"mode": "half"}), cfg)
    with pytest.raises(ConfigError, match=r"strategies\[sft\]\.options\.lora\.rank: must be >= 1, got 0"):
        resolve_entry(StrategySpec("sft", {"lora": {"rank": 0}}), cfg)
    entry = resolve_entry(StrategySpec("sft", {"lora": {"rank": 4}}), cfg)
    assert entry.options_dict["lora"]["rank"] == 4 and entry.options_dict["lora"]["alpha"] == 32.0  # defaults


def _stream(tmp_path, body: str):
    f = tmp_path / "s.yaml"
    f.write_text(body)
    return f


def test_user_jsonl_stream_loads(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"prompt": "Q?", "completion": " A"}) + "\n\n"
                                          + json.dumps({"text": "A fact."}) + "\n")
    (tmp_path / "qa.jsonl").write_text(json.dumps({"prompt": "Q?", "answer": "A"}) + "\n")
    (tmp_path / "mc.jsonl").write_text(json.dumps({"prompt": "Q?", "choices": ["A", "B"], "label": 0}) + "\n")
    f = _stream(tmp_path, "name: u\ntasks:\n  - name: t1\n    train: {path: train.jsonl}\n    probes:\n"
                "      - {name: qa, kind: exact_match, path: qa.jsonl}\n      - {name: mc, kind: multiple_choice, path: mc.jsonl}\n")
    s = load_stream(str(f))
    assert [t.name for t in s.tasks] == ["t1"] and len(s.tasks[0].train) == 2
    assert s.tasks[0].probes[0].items[0]["id"] == "qa-1"
    assert s.suite_names == ["qa", "mc"]


def test_malformed_jsonl_names_file_and_line(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"text": "ok"}\n{"text": oops}\n')
    (tmp_path / "qa.jsonl").write_text('{"prompt": "Q?", "answer": "A"}\n')
    f = _stream(tmp_path, "name: u\ntasks:\n  - name: t1\n    train: {path: train.jsonl}\n    probes:\n"
                "      - {name: qa, kind: exact_match, path: qa.jsonl}\n")
    with pytest.raises(ConfigError, match=r"train\.jsonl:2: malformed JSON"):
        load_stream(str(f))


def test_missing_probe_field_names_file_line_and_field(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"text": "ok"}\n')
    (tmp_path / "mc.jsonl").write_text('{"prompt": "Q?", "choices": ["a", "b"], "label": 0}\n'
                                       '{"prompt": "Q?", "choices": ["a", "b"], "label": 5}\n')
    f = _stream(tmp_path, "name: u\ntasks:\n  - name: t1\n    train: {path: train.jsonl}\n    probes:\n"
                "      - {name: mc, kind: multiple_choice, path: mc.jsonl}\n")
    with pytest.raises(ConfigError, match=r"mc\.jsonl:2: field 'label' is 5, outside 0..1"):
        load_stream(str(f))
    (tmp_path / "mc.jsonl").write_text('{"prompt": "Q?", "choices": ["a", "b"], "label": 1}\n')
    (tmp_path / "train.jsonl").write_text('{"question": "no"}\n')
    with pytest.raises(ConfigError, match=r"train\.jsonl:1: a training record needs 'text'"):
        load_stream(str(f))


def test_stream_structure_errors(tmp_path):
    f = _stream(tmp_path, "name: u\ntasks:\n  - {name: a, generated: {domain: cooking}}\n")
    with pytest.raises(ConfigError, match="unknown generated domain 'cooking'.*allowed: general, medical, notes"):
        load_stream(str(f))
    f = _stream(tmp_path, "name: u\ntasks:\n  - {name: a, generated: {domain: notes, entities: 2}}\n"
                "  - {name: b, pretrained: true, generated: {domain: general, entities: 2}}\n")
    with pytest.raises(ConfigError, match="pretrained tasks must come before"):
        load_stream(str(f))
    f = _stream(tmp_path, "name: u\nprimary_metric: acc\ntasks:\n  - {name: a, generated: {domain: notes, entities: 2}}\n")
    with pytest.raises(ConfigError, match="no probe suite named 'acc'"):
        load_stream(str(f))
    with pytest.raises(ConfigError, match="no stream file or shipped stream named 'nope'.*default"):
        load_stream("nope")


def test_cli_reports_errors_without_traceback(capsys, tmp_path):
    assert main(["run", "--strategies", "sfft", "--results", str(tmp_path), "--no-report", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "unknown strategy 'sfft'" in err and "did you mean 'sft'" in err and "Traceback" not in err


def test_cli_list_shows_options(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "sft:" in out and "    lora.rank (int, default 16): LoRA rank r" in out


def test_option_bounds_hold_from_yaml_and_from_python():
    from clbench.strategies.ewc import EWCOptions
    from clbench.strategies.lwf import LwF

    with pytest.raises(ConfigError, match=r"strategies\[lwf\]\.options\.temperature: must be > 0, got 0\.0"):
        LwF.options_from({"temperature": 0.0}, "strategies[lwf].options")
    with pytest.raises(ConfigError, match=r"EWCOptions\.gamma: must be <= 1, got 1\.5"):
        EWCOptions(gamma=1.5)
    assert EWCOptions(gamma=1.0, fisher_batches=1).fisher_batches == 1  # bounds are inclusive where ge/le


@pytest.mark.parametrize("value", [1, 0, 1.0, "true"])
def test_a_bool_option_refuses_anything_but_true_or_false(value):
    """``online: 1`` must not pass for ``true`` (Python's bool is an int, so a lax check lets it through)."""
    from clbench.strategies.ewc import EWC

    with pytest.raises(ConfigError, match=r"strategies\[ewc\]\.options\.online: expected true or false"):
        EWC.options_from({"online": value}, "strategies[ewc].options")
    assert EWC.options_from({"online": True}, "x").online is True


def test_a_bool_setting_from_the_command_line_refuses_an_integer():
    from clbench.config.experiment import load_config

    with pytest.raises(ConfigError, match=r"reset_optimizer: expected true or false, got 1"):
        load_config(None, ["train.reset_optimizer=1"])
    assert load_config(None, ["train.reset_optimizer=false"]).train.reset_optimizer is False
