"""Issue 25 item 14: ``pretrained: true`` pretrains the embedded model but is "known, never trained" with a
real model; a real model meeting such a task with training records says so, one stderr line per task."""

from __future__ import annotations

from clbench.config.experiment import load_config
from clbench.data.streams import load_stream
from clbench.run.plan import warn_pretrained_records


def test_a_real_model_is_warned_once_per_pretrained_task_with_records(tmp_path, capsys):
    stream = load_stream("micro")
    pretrained = [t for t in stream.tasks if t.pretrained]
    assert len(pretrained) == 1 and pretrained[0].train  # micro: one pretrained task, generated records
    n, name = len(pretrained[0].train), pretrained[0].name
    for model, shown in (("model.name=smollm2-135m", "model.name smollm2-135m"),
                         (f"model.path={tmp_path}", f"model.path {tmp_path}")):
        capsys.readouterr()
        lines = warn_pretrained_records(load_config(None, [model]), stream)
        err = capsys.readouterr().err
        assert err.splitlines() == lines and len(lines) == 1
        assert lines[0].startswith(f"clbench: warning: task {name!r} of stream 'micro' is 'pretrained: true': its "
                                   f"{n} training records are not trained on with a real model ({shown}); ")
        assert lines[0].endswith("to train on them, drop 'pretrained: true'")


def test_the_embedded_model_or_a_pretrained_task_without_records_says_nothing(tmp_path, capsys):
    assert warn_pretrained_records(load_config(None, []), load_stream("micro")) == []
    (tmp_path / "qa.jsonl").write_text('{"prompt": "Q: x?", "answer": "y"}\n')
    (tmp_path / "s.yaml").write_text(
        "name: s\ntasks:\n  - name: known\n    pretrained: true\n    probes: [{name: qa, kind: exact_match, "
        "path: qa.jsonl}]\n  - name: new\n    generated: {domain: notes, entities: 2}\n")
    assert warn_pretrained_records(load_config(None, ["model.name=smollm2-135m"]), load_stream(str(tmp_path / "s.yaml"))) == []
    assert capsys.readouterr().err == ""


def test_the_grid_plan_warns_once(tmp_path, capsys):
    from clbench.run.plan import plan

    capsys.readouterr()
    plan(load_config(None, ["stream=micro", "strategies=[sft, replay]", f"model.path={tmp_path}"]))
    assert capsys.readouterr().err.count("clbench: warning: task ") == 1


def _two_pretrained_stream(tmp_path):
    (tmp_path / "qa.jsonl").write_text('{"prompt": "Q: x?", "answer": "y"}\n')
    probes = "probes: [{name: qa, kind: exact_match, path: qa.jsonl}]"
    (tmp_path / "s.yaml").write_text(
        f"name: s\ntasks:\n  - name: a\n    pretrained: true\n    {probes}\n  - name: b\n    pretrained: true\n"
        f"    {probes}\n  - name: c\n    generated: {{domain: notes, entities: 2}}\n"
        f"  - name: d\n    generated: {{domain: medical, entities: 2}}\n")
    return load_stream(str(tmp_path / "s.yaml"))


def test_the_stream_says_once_which_tasks_are_pretrained(tmp_path):
    stream = _two_pretrained_stream(tmp_path)
    assert stream.pretrained_flags == [True, True, False, False]
    assert stream.pretrained_indices == [0, 1] and stream.trained_indices == [2, 3]
    assert [t.name for t in stream.pretrained_tasks] == ["a", "b"]
    assert [t.name for t in stream.trained_tasks] == ["c", "d"]


def test_a_stored_run_says_which_tasks_were_pretrained():
    from clbench.results.aggregate import Run
    from clbench.results.files import stored_pretrained

    record = {"stream": {"name": "s", "tasks": ["a", "b", "c"], "pretrained": [True, False, False]}}
    assert stored_pretrained(record) == [True, False, False]
    assert stored_pretrained({"stream": {"name": "s", "tasks": ["a", "b"]}}) == [False, False]  # older record
    assert Run("x", record, {}, {}, {}, (), ()).pretrained == [True, False, False]
