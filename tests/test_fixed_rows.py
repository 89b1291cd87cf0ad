"""The reference and base rows: computed by the first run of a model and stream, copied by every other
run, recomputed when the model or the probes change (``clbench.run.base_scores``)."""

import json
import shutil

import pytest

from clbench.run import one_run
from clbench.run.grid import run_grid
from tests.conftest import micro_config

QUIET = {"progress": False, "echo": lambda *a: None}


@pytest.fixture
def evaluations(monkeypatch):
    """The ``desc`` of every row the runner evaluates, in order."""
    seen = []
    real = one_run.evaluate_row

    def counting(lm, stream, cfg, desc="eval", progress=True):
        seen.append(desc)
        return real(lm, stream, cfg, desc, progress)

    monkeypatch.setattr(one_run, "evaluate_row", counting)
    return seen


def _rows(run):
    return {w: json.loads((run / "eval" / f"{w}.json").read_text()) for w in ("reference", "base")}


def _predictions(run, which):
    return {p.name: p.read_text() for p in sorted((run / "predictions" / which).glob("*.jsonl"))}


def _fresh_cache(tmp_path, micro_cache, micro_base_dir):
    """A cache holding a copy of the micro base model and no rows."""
    cache = tmp_path / "cache"
    shutil.copytree(micro_base_dir, cache / micro_base_dir.relative_to(micro_cache))
    return cache


def test_rows_are_computed_once_and_copied_into_every_run(tmp_path, micro_cache, micro_base_dir, evaluations):
    cache = _fresh_cache(tmp_path, micro_cache, micro_base_dir)
    cfg = micro_config(tmp_path, cache_dir=cache, strategies="[sft,frozen]", seeds="[0,1]")
    runs = [path for path, status in run_grid(cfg, **QUIET)]
    assert len(runs) == 4
    assert evaluations.count("eval reference") == 1 and evaluations.count("eval base") == 1
    assert len(list((cache / "rows").glob("*.json"))) == 2
    first = _rows(runs[0])
    for run in runs[1:]:
        rows = _rows(run)
        assert rows == first  # same scores, same cache file named in each
        for which in ("reference", "base"):
            assert _predictions(run, which) == _predictions(runs[0], which) != {}
    assert first["base"]["cache_file"].startswith("base-") and first["reference"]["cache_file"].startswith("reference-")

    # another experiment on the same model and stream reuses them too
    evaluations.clear()
    again = micro_config(tmp_path, cache_dir=cache, strategies="[sft]", seeds="[2]", name="other")
    ((run, _),) = run_grid(again, **QUIET)
    assert "eval reference" not in evaluations and "eval base" not in evaluations
    assert _rows(run) == first


def test_a_different_model_or_probe_set_recomputes(tmp_path, micro_cache, micro_base_dir, evaluations):
    cache = _fresh_cache(tmp_path, micro_cache, micro_base_dir)
    cfg = micro_config(tmp_path, cache_dir=cache, name="a")
    run_grid(cfg, **QUIET)
    assert evaluations.count("eval base") == 1

    # the same weights in another folder are another checkpoint as far as the key knows
    other_model = tmp_path / "copy-of-base"
    shutil.copytree(micro_base_dir, other_model)
    evaluations.clear()
    run_grid(micro_config(tmp_path, cache_dir=cache, name="b", **{"model.path": other_model}), **QUIET)
    assert evaluations.count("eval base") == 1 and evaluations.count("eval reference") == 1

    # a probe set with one item fewer recomputes; going back to the first probe set reuses its rows
    stream = _user_stream(tmp_path / "stream")
    medical_qa = tmp_path / "stream" / "medical_qa.jsonl"
    full = medical_qa.read_text()
    for name, qa, computed in (("full", full, 1), ("fewer", "".join(full.splitlines(True)[1:]), 1), ("again", full, 0)):
        medical_qa.write_text(qa)
        evaluations.clear()
        run_grid(micro_config(tmp_path, cache_dir=cache, name=name, stream=stream, **{"model.path": other_model}),
                 **QUIET)
        assert evaluations.count("eval base") == computed, name


def _user_stream(folder):
    """The micro stream as a user's stream file with one exact-match suite per task."""
    from clbench.data.streams import load_stream

    folder.mkdir()
    tasks = []
    for t in load_stream("micro").tasks:
        qa = next(p for p in t.probes if p.name == "qa").items
        (folder / f"{t.name}_qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa))
        entry = {"name": t.name, "probes": [{"name": "qa", "kind": "exact_match", "path": f"{t.name}_qa.jsonl"}]}
        if t.pretrained:
            entry["pretrained"] = True
        else:
            (folder / f"{t.name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in t.train))
            entry["train"] = {"path": f"{t.name}.jsonl"}
        tasks.append(entry)
    (folder / "stream.yaml").write_text(json.dumps({"name": "user", "primary_metric": "qa", "tasks": tasks}))
    return folder / "stream.yaml"


def test_frozen_copies_the_base_row_after_every_task_instead_of_scoring_it(tmp_path, micro_cache, micro_base_dir,
                                                                          evaluations):
    cache = _fresh_cache(tmp_path, micro_cache, micro_base_dir)
    cfg = micro_config(tmp_path, cache_dir=cache, strategies="[sft,frozen]", seeds="[0]")
    runs = {path.parent.name: path for path, status in run_grid(cfg, **QUIET)}
    trained = [i for i, t in enumerate(cfg_tasks(cfg)) if not t.pretrained]
    after = [d for d in evaluations if d.startswith("eval after")]
    assert len(after) == len(trained) >= 2  # sft's rows only: frozen scored nothing after a task
    frozen = runs["frozen"]
    base = json.loads((frozen / "eval" / "base.json").read_text())
    for t in trained:
        row = json.loads((frozen / "eval" / f"after_{t}.json").read_text())
        assert row["scores"] == base["scores"] and row["n_items"] == base["n_items"]
        assert row["copied_from"] == "base" and row["seconds"] == 0.0
        assert _predictions(frozen, f"after_{t}") == _predictions(frozen, "base") != {}
    sft_row = json.loads((runs["sft"] / "eval" / f"after_{trained[-1]}.json").read_text())
    assert "copied_from" not in sft_row and sft_row["scores"] != base["scores"]


def cfg_tasks(cfg):
    from clbench.data.streams import load_stream

    return load_stream(cfg.stream).tasks
