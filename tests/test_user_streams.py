"""User data streams: JSONL, CSV, Parquet and ``save_to_disk`` sources, field mapping, and errors that
name the file, the line or row, and the field."""

from __future__ import annotations

import json
import textwrap

import pytest

from clbench.data.streams import load_stream
from clbench.errors import ConfigError

QA = [{"q": "Question: Capital of Zorbia?\nAnswer:", "a": "Flim"},
      {"q": "Question: Capital of Quaxia?\nAnswer:", "a": "Dorn"}]
MC = [{"prompt": "Zorbia's capital:", "choices": ["Flim", "Dorn", "Vell"], "label": 0},
      {"prompt": "Quaxia's capital:", "choices": ["Flim", "Dorn", "Vell"], "label": 1}]


def write_stream(folder, tasks_yaml: str) -> str:
    path = folder / "stream.yaml"
    path.write_text("name: user\nprimary_metric: qa\ntasks:\n" + textwrap.indent(textwrap.dedent(tasks_yaml), "  "))
    return str(path)


def write_csv(path, text: str):
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


@pytest.fixture
def data(tmp_path):
    """One source of each kind, with the columns a user's own files would have."""
    import datasets
    import pandas as pd

    write_csv(tmp_path / "train.csv", '''
        question,answer,source
        "Question: Capital of Zorbia?
        Answer:", Flim,atlas
        "Question: Capital of Quaxia?
        Answer:", Dorn,atlas
        ''')
    write_csv(tmp_path / "mc.csv", '''
        stem,A,B,C,gold
        Zorbia's capital:,Flim,Dorn,Vell,0
        Quaxia's capital:,Flim,Dorn,Vell,1
        ''')
    pd.DataFrame({"question": [r["q"] for r in QA], "gold": [r["a"] for r in QA]}).to_parquet(tmp_path / "qa.parquet")
    datasets.DatasetDict({"test": datasets.Dataset.from_list(MC), "dev": datasets.Dataset.from_list(MC[:1])}) \
        .save_to_disk(str(tmp_path / "mc_saved"))
    datasets.Dataset.from_list([{"body": "Zorbia has its capital at Flim."}]).save_to_disk(str(tmp_path / "ppl_saved"))
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps({"prompt": r["q"], "answer": r["a"]}) + "\n" for r in QA))
    return tmp_path


def test_every_source_kind_loads_with_mapped_fields(data):
    stream = load_stream(write_stream(data, """
        - name: atlas
          train: {path: train.csv, fields: {prompt: question, completion: answer}}
          probes:
            - {name: qa, kind: exact_match, path: qa.parquet, fields: {prompt: question, answer: gold}}
            - {name: qa_jsonl, kind: exact_match, path: qa.jsonl}
            - {name: mc, kind: multiple_choice, path: mc_saved, split: test}
            - {name: mc_csv, kind: multiple_choice, path: mc.csv, fields: {prompt: stem, choices: [A, B, C], label: gold}}
            - {name: ppl, kind: perplexity, path: ppl_saved, fields: {text: body}}
        """))
    (task,) = stream.tasks
    # CSV: quoted multi-line cells kept, the unmapped 'source' column dropped, cells kept as written
    assert list(task.train) == [{"prompt": r["q"], "completion": " " + r["a"]} for r in QA]
    suites = {s.name: s for s in task.probes}
    expected_qa = [{"prompt": r["q"], "answer": r["a"]} for r in QA]
    assert [{k: i[k] for k in ("prompt", "answer")} for i in suites["qa"].items] == expected_qa
    assert [i["id"] for i in suites["qa"].items] == ["qa-1", "qa-2"]  # Parquet: row numbers
    assert [i["id"] for i in suites["qa_jsonl"].items] == ["qa_jsonl-1", "qa_jsonl-2"]  # JSONL: line numbers
    assert [{k: i[k] for k in ("prompt", "choices", "label")} for i in suites["mc"].items] == MC
    # CSV text turned into what the kind needs: choices from three columns, label "1" -> 1
    assert [{k: i[k] for k in ("prompt", "choices", "label")} for i in suites["mc_csv"].items] == MC
    assert [i["id"] for i in suites["mc_csv"].items] == ["mc_csv-2", "mc_csv-3"]  # CSV: file lines
    assert [i["text"] for i in suites["ppl"].items] == ["Zorbia has its capital at Flim."]


def test_explicit_format_overrides_the_suffix(data):
    (data / "qa.txt").write_text((data / "qa.jsonl").read_text())
    (data / "train.data").write_text((data / "train.csv").read_text())
    stream = load_stream(write_stream(data, """
        - name: t
          train: {path: train.data, format: csv, fields: {prompt: question, completion: answer}}
          probes: [{name: qa, kind: exact_match, path: qa.txt, format: jsonl}]
        """))
    assert len(stream.tasks[0].train) == 2 and len(stream.tasks[0].probes[0].items) == 2


def _error(data, tasks_yaml) -> str:
    with pytest.raises(ConfigError) as exc:
        load_stream(write_stream(data, tasks_yaml))
    return str(exc.value)


def test_missing_mapped_column_names_file_line_and_field(data):
    msg = _error(data, """
        - name: t
          train: {path: train.csv, fields: {prompt: query, completion: answer}}
          probes: [{name: qa, kind: exact_match, path: qa.jsonl}]
        """)
    assert msg.startswith(f"{data / 'train.csv'}:2: missing field 'query' (mapped to 'prompt')")
    assert "(allowed: answer, question, source)" in msg


def test_malformed_csv_row_names_its_line(data):
    write_csv(data / "bad.csv", '''
        question,answer
        "Q1?",A1
        "Q2?",A2,extra
        ''')
    msg = _error(data, """
        - name: t
          train: {path: bad.csv, fields: {prompt: question, completion: answer}}
          probes: [{name: qa, kind: exact_match, path: qa.jsonl}]
        """)
    assert msg.startswith(f"{data / 'bad.csv'}:3: malformed CSV row: 3 cells, the header has 2")


def test_bad_value_in_a_csv_row_names_line_and_field(data):
    write_csv(data / "mc_bad.csv", '''
        stem,A,B,gold
        s1,x,y,1
        s2,x,y,second
        ''')
    msg = _error(data, """
        - name: t
          train: {path: train.csv, fields: {prompt: question, completion: answer}}
          probes: [{name: qa, kind: multiple_choice, path: mc_bad.csv, fields: {prompt: stem, choices: [A, B], label: gold}}]
        """)
    assert msg == f"{data / 'mc_bad.csv'}:3: field 'label' must be int, got 'second'"


def test_a_pq_file_is_read_as_parquet(data):
    """``.pq`` is Parquet's other suffix: read by the Parquet reader (row-numbered ids), not as JSONL text."""
    (data / "qa.parquet").rename(data / "qa.pq")
    stream = load_stream(write_stream(data, """
        - name: atlas
          train: {path: train.csv, fields: {prompt: question, completion: answer}}
          probes:
            - {name: qa, kind: exact_match, path: qa.pq, fields: {prompt: question, answer: gold}}
        """))
    (suite,) = stream.tasks[0].probes
    assert [(i["id"], i["prompt"], i["answer"]) for i in suite.items] == [(f"qa-{k}", r["q"], r["a"])
                                                                          for k, r in enumerate(QA, start=1)]


def test_bad_parquet_row_names_row_and_field(data):
    import pandas as pd

    pd.DataFrame({"question": ["q1", "q2", "q3"], "gold": ["a1", None, "a3"]}).to_parquet(data / "holes.parquet")
    msg = _error(data, """
        - name: t
          train: {path: train.csv, fields: {prompt: question, completion: answer}}
          probes: [{name: qa, kind: exact_match, path: holes.parquet, fields: {prompt: question, answer: gold}}]
        """)
    assert msg == f"{data / 'holes.parquet'} row 2: field 'answer' must be str, got None"


def test_jsonl_keeps_its_line_errors(data):
    (data / "broken.jsonl").write_text('{"prompt": "a", "answer": "b"}\n\n{"prompt": "c"\n')
    msg = _error(data, """
        - name: t
          train: {path: train.csv, fields: {prompt: question, completion: answer}}
          probes: [{name: qa, kind: exact_match, path: broken.jsonl}]
        """)
    assert msg.startswith(f"{data / 'broken.jsonl'}:3: malformed JSON")
    (data / "short.jsonl").write_text('{"prompt": "a", "answer": "b"}\n{"prompt": "c"}\n')
    msg = _error(data, """
        - name: t
          train: {path: train.csv, fields: {prompt: question, completion: answer}}
          probes: [{name: qa, kind: exact_match, path: short.jsonl}]
        """)
    assert msg == f"{data / 'short.jsonl'}:2: missing field 'answer' (allowed: answer, prompt)"


def test_saved_dataset_dict_needs_a_split(data):
    msg = _error(data, """
        - name: t
          train: {path: train.csv, fields: {prompt: question, completion: answer}}
          probes: [{name: qa, kind: multiple_choice, path: mc_saved}]
        """)
    assert "tasks[0].probes[0].split: " in msg and "holds several splits; name one (allowed: dev, test)" in msg
    msg = _error(data, """
        - name: t
          train: {path: train.csv, fields: {prompt: question, completion: answer}}
          probes: [{name: qa, kind: multiple_choice, path: mc_saved, split: train}]
        """)
    assert "no split 'train'" in msg


def test_unknown_keys_fields_and_kinds_name_the_allowed_ones(data):
    msg = _error(data, """
        - name: t
          train: {path: train.csv, fields: {promt: question, completion: answer}}
          probes: [{name: qa, kind: exact_match, path: qa.jsonl}]
        """)
    assert "tasks[0].train.fields: unknown field 'promt' — did you mean 'prompt'? (allowed: completion, prompt, text)" in msg
    msg = _error(data, """
        - name: t
          train: {path: train.csv, fields: {prompt: question, completion: answer}}
          probes: [{name: qa, kind: exact_match, path: qa.jsonl, field: {}}]
        """)
    assert "tasks[0].probes[0]: unknown key 'field'" in msg and "(allowed: fields, format, kind, limit, name, path, split, until)" in msg
    msg = _error(data, """
        - name: t
          train: {path: train.csv, fields: {prompt: question, completion: answer}}
          probes: [{name: qa, kind: exact, path: qa.jsonl}]
        """)
    assert "tasks[0].probes[0].kind: unknown probe kind 'exact' (allowed: exact_match, lm_eval, multiple_choice, perplexity)" in msg


def test_generated_task_takes_extra_probe_suites(data):
    stream = load_stream(write_stream(data, """
        - name: medical
          generated: {domain: medical, entities: 2}
          probes:
            - {name: extra, kind: exact_match, path: qa.jsonl}
            - {name: ppl, kind: perplexity, path: ppl_saved, fields: {text: body}}
        """))
    suites = {s.name: s for s in stream.tasks[0].probes}
    assert list(suites) == ["qa", "mc", "ppl", "extra"]
    assert [i["text"] for i in suites["ppl"].items] == ["Zorbia has its capital at Flim."]  # replaced
    assert len(stream.tasks[0].train) > 0
