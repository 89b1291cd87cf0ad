"""Issue 23, stream files and data: checked when the stream is loaded, before anything is written —
YAML (duplicate keys, aliases), counts (entities, seeds), and records that would be accepted silently
(empty answers, choices, ``until`` strings and training texts; duplicate choices and item ids)."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest

from clbench.errors import ConfigError
from tests.cli_helpers import micro_args
from tests.test_bad_names import MICRO, micro_with, refused_leaving_nothing


def load(path: Path):
    from clbench.data.streams import load_stream

    return load_stream(str(path))


# --- YAML ----------------------------------------------------------------------------------------


def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path, capsys):
    stream = micro_with(tmp_path, "primary_metric: qa\n", "primary_metric: qa\nversion: 2\n")
    err = refused_leaving_nothing(capsys, micro_args(tmp_path / "results", tmp_path / "cache", stream=str(stream)),
                                  tmp_path)
    assert err == (f"{stream}:5: key 'version' appears twice in one mapping (lines 3 and 5); YAML would keep the "
                   "last silently — remove one")


def test_a_key_given_twice_in_an_experiment_file_is_refused(tmp_path):
    from clbench.config.experiment import load_config

    config = tmp_path / "exp.yaml"
    config.write_text("name: a\ntrain:\n  lr: 0.001\n  steps_per_task: 3\n  lr: 0.1\n")
    with pytest.raises(ConfigError) as exc:
        load_config(config)
    assert str(exc.value) == (f"{config}:5: key 'lr' appears twice in one mapping (lines 3 and 5); YAML would keep "
                              "the last silently — remove one")


BOMB = "\n".join(["name: bomb", "tasks: []", "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
                 + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
                 + ["description: *i", ""])


def test_an_alias_bomb_is_refused_before_it_is_expanded(tmp_path):
    """A 1 KB file whose aliases expand to 9^9 (387 million) strings: refused in well under a second, with
    next to no memory (it used to grow without bound once the type check printed the value)."""
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    assert len(BOMB) < 1600
    rss, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    with pytest.raises(ConfigError, match=r"bomb\.yaml:\d+: aliases expand this document past 1,0\d\d,\d{3} characters "
                                          r"\(four times the file plus 1 MiB\); an alias bomb\?"):
        load(path)
    assert time.perf_counter() - t0 < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 200 * 1024  # KiB


def test_an_alias_that_contains_itself_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("name: loop\ntasks: []\ndescription: &a [x, *a]\n")
    with pytest.raises(ConfigError, match=r"loop\.yaml:3: an alias refers to the node that contains it"):
        load(path)


def test_an_anchor_used_a_few_times_still_loads(tmp_path):
    from clbench.config.experiment import load_config

    config = tmp_path / "exp.yaml"
    config.write_text("stream: micro\nstrategies:\n  - {name: sft, label: a, train: &t {lr: 0.001, steps_per_task: 3}}\n"
                      "  - {name: l2, label: b, train: *t}\n")
    cfg = load_config(config)
    assert [s["train"] for s in cfg.strategies] == [{"lr": 0.001, "steps_per_task": 3}] * 2


# --- counts --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "message"), [
    ("0", "must be >= 1, got 0"),
    ("-3", "must be >= 1, got -3"),
    ("1000000000000", "must be <= 10000, got 1000000000000"),
])
def test_generated_entities_out_of_bounds_are_refused(value, message, tmp_path, capsys):
    stream = micro_with(tmp_path, "{domain: medical, entities: 2}", f"{{domain: medical, entities: {value}}}")
    err = refused_leaving_nothing(capsys, micro_args(tmp_path / "results", tmp_path / "cache", stream=str(stream)),
                                  tmp_path)
    assert err == f"{stream}.tasks[1].generated.entities: {message}"


def test_too_few_entities_for_a_domain_are_refused_by_its_generator(tmp_path):
    path = micro_with(tmp_path, "{domain: general, entities: 4}", "{domain: general, entities: 2}")
    with pytest.raises(ConfigError) as exc:
        load(path)
    assert str(exc.value) == (f"{path}.tasks[0].generated.entities: generator 'general': general-0000-capital: 1 "
                              "other value(s) of its relation to draw from, and a multiple-choice item needs 3 "
                              "distractors (more entities give more)")


@pytest.mark.parametrize(("old", "new", "message"), [
    ("generator_seed: 0", "generator_seed: 99999999999999999999999",
     "generator_seed: must be <= 4294967295, got 99999999999999999999999"),
    ("{domain: medical, entities: 2, seed: 1000}", "{domain: medical, entities: 2, seed: -1}",
     "pretrain_background[0].seed: must be >= 0, got -1"),
])
def test_a_seed_outside_what_numpy_takes_is_refused(old, new, message, tmp_path):
    path = micro_with(tmp_path, old, new)
    with pytest.raises(ConfigError) as exc:
        load(path)
    assert str(exc.value) == f"{path}.{message}"


# --- records -------------------------------------------------------------------------------------


def user_task(tmp_path: Path, probe: str, lines: list[str], train: list[str] | None = None) -> Path:
    """The micro stream with a fourth task whose probe suite reads ``items.jsonl`` (``lines``)."""
    (tmp_path / "items.jsonl").write_text("".join(line + "\n" for line in lines))
    (tmp_path / "train.jsonl").write_text("".join(line + "\n" for line in (train or ['{"text": "some notes"}'])))
    path = tmp_path / "s.yaml"
    path.write_text(MICRO.replace("pretrain_background:", "  - name: mine\n    train: {path: train.jsonl}\n"
                                  f"    probes: [{probe}]\npretrain_background:"))
    return path


QA = "{name: qa, kind: exact_match, path: items.jsonl}"
MC = "{name: mc, kind: multiple_choice, path: items.jsonl}"


@pytest.mark.parametrize(("probe", "lines", "line", "message"), [
    (QA, ['{"prompt": "Q: a?", "answer": "b"}', '{"prompt": "Q: c?", "answer": ""}'], 2,
     "field 'answer' is '', empty once normalised"),
    (QA, ['{"prompt": "Q: c?", "answer": " . "}'], 1, "field 'answer' is ' . ', empty once normalised"),
    (QA, ['{"prompt": "Q: c?", "answer": "d", "aliases": ["e", "  "]}'], 1,
     "field 'aliases[1]' is '  ', empty once normalised"),
    (MC, ['{"prompt": "Q?", "choices": ["a", "", "c"], "label": 0}'], 1, "choices[1] is empty"),
    (MC, ['{"prompt": "Q?", "choices": ["a", "b", "a"], "label": 0}'], 1,
     "choices[0] and choices[2] are the same ('a'): the item could not tell them apart"),
])
def test_empty_or_duplicate_answers_and_choices_are_refused(probe, lines, line, message, tmp_path):
    path = user_task(tmp_path, probe, lines)
    with pytest.raises(ConfigError) as exc:
        load(path)
    assert str(exc.value).startswith(f"{tmp_path / 'items.jsonl'}:{line}: {message}")


def test_duplicate_item_ids_name_both_lines(tmp_path):
    path = user_task(tmp_path, QA, ['{"id": "x1", "prompt": "Q: a?", "answer": "b"}',
                                    '{"id": "x2", "prompt": "Q: c?", "answer": "d"}',
                                    '{"id": "x1", "prompt": "Q: e?", "answer": "f"}'])
    with pytest.raises(ConfigError) as exc:
        load(path)
    items = tmp_path / "items.jsonl"
    assert str(exc.value).startswith(f"{items}:3: item id 'x1' is also the id of the item at {items}:1")


def test_an_empty_until_string_is_refused(tmp_path):
    path = user_task(tmp_path, "{name: qa, kind: exact_match, path: items.jsonl, until: ['.', '']}",
                     ['{"prompt": "Q: a?", "answer": "b"}'])
    with pytest.raises(ConfigError) as exc:
        load(path)
    assert str(exc.value) == (f"{path}.tasks[3].probes[0].until[1]: an empty string would end every answer before its "
                              "first character")


@pytest.mark.parametrize(("record", "field"), [('{"text": ""}', "text"), ('{"text": " \\n "}', "text"),
                                               ('{"prompt": "Q: a?", "completion": ""}', "completion")])
def test_an_empty_training_text_is_refused(record, field, tmp_path):
    path = user_task(tmp_path, QA, ['{"prompt": "Q: a?", "answer": "b"}'], ['{"text": "fine"}', record])
    with pytest.raises(ConfigError) as exc:
        load(path)
    assert str(exc.value) == (f"{tmp_path / 'train.jsonl'}:2: field {field!r} is empty: a training record needs text "
                              "to learn")


# --- prompt templates ------------------------------------------------------------------------------


@pytest.mark.parametrize("template", [
    "{{ ('x' * 4000000000)[:5] }}", "{{ [0] * 4000000000 }}", "{{ 7 ** 100000000 }}",
    "{{ 'x' | center(4000000000) }}", "{{ '%4000000000s' % 1 }}",
    "{% for i in range(100000) %}{{ 'a long line of prompt text' }}{% endfor %}",
])
def test_a_prompt_template_cannot_take_unbounded_memory(template):
    from lm_eval import utils

    from clbench.data.task_code import sandbox_templates

    sandbox_templates()
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"^lm-eval prompt template: would build .*; the sandbox stops at 1,048,576 "):
        utils.apply_template(template, {})
    assert time.perf_counter() - t0 < 2
    assert utils.apply_template("{{ q }}{{ '%s-%d' % (q, 3) }} {{ [1] * 2 }} {{ 2 ** 10 }}|{{ 'ab' | center(4) }}",
                                {"q": "x"}) == "xx-3 [1, 1] 1024| ab "
