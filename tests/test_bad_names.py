"""Issue 23, names: every name that becomes part of a path follows one rule, checked when the stream or
config is loaded (file, line, field in the error); every path clbench writes stays under its root.

Each refused case runs the real CLI in this process and asserts the message, exit code 2, and that
nothing at all was written in the test's folder (results, cache, report and anything beside them).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clbench.errors import ConfigError
from tests.cli_helpers import cli, micro_args, tree

ROOT = Path(__file__).resolve().parent.parent
MICRO = (ROOT / "tasks" / "micro.yaml").read_text()


def refused_leaving_nothing(capsys, args, folder: Path, one_line: bool = True) -> str:
    """Run ``clbench <args>``: exit code 2, a ``clbench: error:`` line (after any progress bar a library drew),
    no traceback, and ``folder`` (which holds the results, the cache and the inputs) exactly as it was.
    Returns the error's text."""
    before = tree(folder)
    rc, _, err = cli(args, capsys)
    assert rc == 2, err
    assert "Traceback" not in err and "clbench: error: " in err, err
    text = err[err.index("clbench: error: ") + len("clbench: error: "):]
    assert text.endswith("\n") and (text.count("\n") == 1 or not one_line), err
    assert tree(folder) == before, sorted(set(tree(folder)) - set(before))
    return text[:-1]


def micro_with(tmp_path: Path, old: str, new: str) -> Path:
    assert old in MICRO
    path = tmp_path / "s.yaml"
    path.write_text(MICRO.replace(old, new, 1))
    return path


LONG = "t" * 300
RULE = ("a name is 1 to 64 ASCII letters, digits and '_' '.' '+' '-', starting with a letter or a digit, because it "
        "becomes part of a file path")


@pytest.mark.parametrize(("old", "new", "line", "field", "problem"), [
    ("name: micro", "name: ../escaped", 2, "name", "'../escaped' is not a valid name (character '/')"),
    ("name: micro", "name: ..", 2, "name", "'..' is not a valid name (first character '.')"),
    ("name: micro", "name: ''", 2, "name", "the name is empty"),
    ("  - name: medical", "  - name: ../../../../escaped/x", 10, "tasks[1].name",
     "'../../../../escaped/x' is not a valid name (character '/')"),
    ("  - name: medical", "  - name: a/b", 10, "tasks[1].name", "'a/b' is not a valid name (character '/')"),
    ("  - name: medical", f"  - name: {LONG}", 10, "tasks[1].name", "the name has 300 characters, more than 64"),
    ("    generated: {domain: medical, entities: 2}",
     "    generated: {domain: medical, entities: 2}\n    probes: [{name: ../x, kind: exact_match, path: qa.jsonl}]",
     12, "tasks[1].probes[0].name", "'../x' is not a valid name (character '/')"),
    ("    generated: {domain: medical, entities: 2}",
     ("    generated: {domain: medical, entities: 2}\n    probes:\n      - {name: q/../../x, kind: exact_match, "
     "path: qa.jsonl}"), 13, "tasks[1].probes[0].name", "'q/../../x' is not a valid name (character '/')"),
])
def test_a_stream_name_that_is_not_an_identifier_is_refused_with_file_line_and_field(
        old, new, line, field, problem, tmp_path, capsys):
    (tmp_path / "qa.jsonl").write_text('{"prompt": "Q: x?", "answer": "y"}\n')
    stream = micro_with(tmp_path, old, new)
    err = refused_leaving_nothing(capsys, micro_args(tmp_path / "results", tmp_path / "cache", stream=str(stream)),
                                  tmp_path)
    assert err == f"{stream}:{line}: {field}: {problem}; {RULE}"


def test_a_nul_byte_in_a_stream_name_is_refused(tmp_path, capsys):
    stream = micro_with(tmp_path, "name: micro", 'name: "mi\\0cro"')
    err = refused_leaving_nothing(capsys, micro_args(tmp_path / "results", tmp_path / "cache", stream=str(stream)),
                                  tmp_path)
    assert err == f"{stream}.name: a NUL byte (\\0) at character 3 of 'mi\\x00cro'"


@pytest.mark.parametrize(("args", "where", "problem"), [
    (("--name", ".."), "--name", "'..' is not a valid name (first character '.')"),
    (("--name", "a/../../b"), "--name", "'a/../../b' is not a valid name (character '/')"),
    (("--set", "name=x y"), "--set name", "'x y' is not a valid name (character ' ')"),
    (("--set", "strategies=[{name: sft, label: ../../up}]"), "--set strategies[0].label",
     "'../../up' is not a valid name (character '/')"),
])
def test_an_experiment_name_or_label_that_is_not_an_identifier_is_refused(args, where, problem, tmp_path, capsys):
    base = micro_args(tmp_path / "results", tmp_path / "cache")
    base = [a for a in base if a not in ("--strategies", "sft")]  # (a flag would win over --set strategies)
    err = refused_leaving_nothing(capsys, [*base, *args], tmp_path)
    assert err == f"{where}: {problem}; {RULE}"


def test_a_label_in_a_config_file_names_its_line(tmp_path, capsys):
    config = tmp_path / "exp.yaml"
    config.write_text("name: exp\nstream: micro\nstrategies:\n  - sft\n  - {name: sft, label: ../x}\n")
    args = [a for a in micro_args(tmp_path / "results", tmp_path / "cache") if a not in ("--strategies", "sft")]
    err = refused_leaving_nothing(capsys, [*args[:1], str(config), *args[1:]], tmp_path)
    assert err == f"{config}:5: strategies[1].label: '../x' is not a valid name (character '/'); {RULE}"


def test_two_task_and_suite_names_that_would_share_a_prediction_file_are_refused(tmp_path):
    from clbench.data.streams import load_stream

    (tmp_path / "qa.jsonl").write_text('{"prompt": "Q: x?", "answer": "y"}\n')
    text = MICRO.replace("  - name: notes\n    generated: {domain: notes, entities: 2}\n",
                         "  - name: notes\n    generated: {domain: notes, entities: 2}\n"
                         "    probes: [{name: x.qa, kind: exact_match, path: qa.jsonl}]\n"
                         "  - name: notes.x\n    generated: {domain: notes, entities: 2}\n")
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"task 'notes\.x' with suite 'qa' and task 'notes' with suite 'x\.qa' "
                                          r"would share the prediction file notes\.x\.qa\.jsonl"):
        load_stream(str(tmp_path / "s.yaml"))


@pytest.mark.parametrize("part", ["..", ".", "", "a/b", "a\0b", "x" * 256])
def test_inside_refuses_any_part_that_is_not_one_path_component(part, tmp_path):
    from clbench.paths import inside

    with pytest.raises(ConfigError, match="cannot be a file or folder name under this folder"):
        inside(tmp_path, "ok", part)
    assert inside(tmp_path, "ok", "seed_0") == tmp_path / "ok" / "seed_0"


def test_component_makes_derived_names_safe_and_keeps_valid_names():
    from clbench.paths import component

    assert component("sft-lr1e-3") == "sft-lr1e-3" and component("notes.v2") == "notes.v2"
    assert component("sft~lr=0.001") == "sft_lr_0.001"
    assert component("medical>notes") == "medical_notes"
    assert component("..") == "_.." and component("../x") == "_.._x" and component("") == "_"


def test_every_file_of_a_run_and_its_report_lies_under_its_root(micro_cache, micro_base_dir, tmp_path, capsys):
    """A whole run with its report: every file written below ``tmp_path`` lies in the results folder, the
    report folder or the cache (a copy of the shared one's base model: the cached rows are written anew)."""
    import shutil

    results, report, cache = tmp_path / "results", tmp_path / "report", tmp_path / "cache"
    shutil.copytree(micro_base_dir, cache / "base_models" / micro_base_dir.name)
    before = set(tree(tmp_path))
    args = [a for a in micro_args(results, cache, train={"steps_per_task": 1}) if a != "--no-report"]
    rc, _, err = cli([*args, "--report-dir", str(report)], capsys)
    assert rc == 0, err
    written = [p for p in tmp_path.rglob("*") if p.is_file() and str(p.relative_to(tmp_path)) not in before]
    roots = {root: [p for p in written if root.resolve() in p.resolve().parents] for root in (results, report, cache)}
    assert sum(map(len, roots.values())) == len(written), sorted(set(written) - {p for ps in roots.values() for p in ps})
    assert all(roots.values())  # each root got files (rows in the cache, the run, the report)
    assert any(p.parent.name == "rows" for p in roots[cache])
