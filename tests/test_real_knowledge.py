"""The real-world knowledge suite (tasks/real_knowledge/), the known subset and per-category scores.

The scoring machinery runs on the microscopic embedded model used as a ``model.path`` checkpoint (it
knows no real facts, but multiple choice gets some right by chance, which is all a known subset needs);
the real model's own smoke test is ``tests/test_real_model.py``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from clbench.data.streams import load_stream
from clbench.errors import ConfigError
from clbench.eval.probes import cut_at
from clbench.tasks.real_knowledge import build

STREAM = """
name: world-micro
version: 1
primary_metric: mc
known_subset: true
tasks:
  - name: world
    pretrained: true
    train: {{path: {rk}/background.jsonl}}
    probes:
      - {{name: qa, kind: exact_match, path: {rk}/qa.jsonl, limit: 20, until: [".", ","]}}
      - {{name: mc, kind: multiple_choice, path: {rk}/mc.jsonl, limit: 20}}
      - {{name: ppl, kind: perplexity, path: {rk}/ppl.jsonl, limit: 20}}
  - name: medical
    generated: {{domain: medical, entities: 2}}
"""


def test_shipped_files_equal_the_generator_output():
    for name, recs in build.build(build.load_facts()).items():
        assert (build.HERE / name).read_text(encoding="utf-8") == build.render(recs), name


def test_suite_size_categories_and_distractors():
    facts = build.load_facts()
    out = build.build(facts)
    cats = Counter(f["category"] for f in facts)
    assert len(facts) == 380 and len(cats) == 10 and min(cats.values()) >= 17
    assert len(out["qa.jsonl"]) + len(out["background.jsonl"]) == len(facts)
    probed = {r["id"] for r in out["qa.jsonl"]}
    assert len(probed) == len(out["qa.jsonl"])  # unique ids
    background = {r["text"] for r in out["background.jsonl"]}
    assert not background & {r["text"] for r in out["ppl.jsonl"]}  # background facts are never probed
    answers = {c: {f["answer"] for f in facts if f["category"] == c} for c in cats}
    for r in out["mc.jsonl"]:
        assert len(set(r["choices"])) == 4 and set(r["choices"]) <= answers[r["category"]]
    # interleaved: the first 100 items hold 10 of each category
    assert set(Counter(r["category"] for r in out["qa.jsonl"][:100]).values()) == {10}
    # the author category accepts the surname alone
    tolstoy = next(r for r in out["qa.jsonl"] if r["answer"] == "Leo Tolstoy")
    assert tolstoy["aliases"] == ["Tolstoy"] and tolstoy["prompt"].endswith("was written by")


def test_real_stream_loads_with_limits_and_until():
    stream = load_stream("real")
    world = stream.tasks[0]
    assert world.pretrained and stream.spec.known_subset
    suites = {s.name: s for s in world.probes}
    assert [len(suites[n].items) for n in ("qa", "mc", "ppl")] == [100, 100, 100]
    assert suites["qa"].config == {"until": [".", ",", ";", " ("]}
    assert suites["qa"].items[0] == {"id": "capital-000", "category": "capital", "prompt": "The capital of France is",
                                     "answer": "Paris", "aliases": []}


def test_until_cuts_and_aliases_match():
    from clbench.data.streams import ProbeSuite
    from clbench.eval.probes import score_exact_match

    class Fixed:
        def generate(self, prompts, max_new_tokens, until=()):
            return [" Paris, the city of light", " Japanese yen (JPY)", " Lyon."]

    suite = ProbeSuite("qa", "exact_match", (
        {"id": "a", "prompt": "p", "answer": "Paris"}, {"id": "b", "prompt": "p", "answer": "yen",
                                                       "aliases": ["Japanese yen"]},
        {"id": "c", "prompt": "p", "answer": "Paris", "category": "capital"}), {"until": [".", ",", " ("]})
    res = score_exact_match(suite, Fixed(), 8)
    assert [i["correct"] for i in res.items] == [True, True, False]
    assert [i["prediction"] for i in res.items] == [" Paris", " Japanese yen", " Lyon"]
    assert res.items[2]["category"] == "capital" and res.items[0]["generated"] == " Paris, the city of light"
    assert cut_at("abc", ["x"]) == "abc"


def test_until_on_a_non_generation_suite_is_refused(tmp_path):
    rk = build.HERE
    (tmp_path / "s.yaml").write_text(STREAM.format(rk=rk).replace("limit: 20}}", "limit: 20, until: [x]}}", 1)
                                     .replace("mc.jsonl, limit: 20}", "mc.jsonl, limit: 20, until: [x]}"))
    with pytest.raises(ConfigError, match=r"probes\[1\]\.until: 'until' applies to exact_match suites"):
        load_stream(str(tmp_path / "s.yaml"))


def _items(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_known_subset_and_categories_from_stored_predictions(tmp_path, micro_cache, micro_base_dir, monkeypatch):
    from clbench.reporting.build import build_report
    from clbench.run import base_scores
    from clbench.run.grid import run_grid
    from tests.conftest import micro_config

    (tmp_path / "s.yaml").write_text(STREAM.format(rk=build.HERE))
    cfg = micro_config(tmp_path, cache_dir=micro_cache, stream=str(tmp_path / "s.yaml"),
                       model={"path": str(micro_base_dir)}, train={"steps_per_task": 2})
    [(run, status)] = run_grid(cfg, progress=False, echo=lambda *_: None)
    assert status == "done"
    known = json.loads((run / "eval" / "known_subset.json").read_text())
    base_mc = _items(run / "predictions" / "base" / "world.mc.jsonl")
    assert known["ids"]["world"]["mc"] == sorted(i["id"] for i in base_mc if i["correct"])
    assert known["items"]["world"] == {"qa": 20, "mc": 20}
    ids = set(known["ids"]["world"]["mc"])
    assert 0 < len(ids) < 20  # chance-level multiple choice: some right, some wrong

    matrix = json.loads((run / "matrix.json").read_text())["suites"]
    assert "ppl_known" not in matrix  # perplexity has no right-or-wrong items
    mk, mc = matrix["mc_known"], matrix["mc"]
    after = _items(run / "predictions" / "after_1" / "world.mc.jsonl")
    assert mk["base"][0] == 1.0
    assert mk["R"][1][0] == sum(i["correct"] for i in after if i["id"] in ids) / len(ids)
    assert mk["R"][1][1] == mc["R"][1][1]  # a trained task: every item, as in the plain suite
    assert mk["known_items"] == {"world": len(ids)}
    metrics = json.loads((run / "metrics.json").read_text())
    assert "mc_known" in metrics["suites"]
    cats = metrics["categories"]["world"]["mc"]
    assert set(cats) == {"capital", "currency", "language", "continent", "element", "planet", "unit",
                         "animal_young", "author", "painter"} and cats["capital"]["n"] == 2
    capital = [i for i in after if i["category"] == "capital"]
    assert cats["capital"]["after"][-1] == sum(i["correct"] for i in capital) / len(capital)

    # a second seed reuses the cached subset (no evaluation of the known subset again)
    def refuse(*a, **k):
        raise AssertionError("the known subset was evaluated twice")

    monkeypatch.setattr(base_scores, "evaluate_row", refuse)
    cfg2 = micro_config(tmp_path, cache_dir=micro_cache, stream=str(tmp_path / "s.yaml"), seeds=[1],
                        model={"path": str(micro_base_dir)}, train={"steps_per_task": 2})
    [(run2, _)] = run_grid(cfg2, progress=False, echo=lambda *_: None)
    assert (run2 / "eval" / "known_subset.json").read_bytes() == (run / "eval" / "known_subset.json").read_bytes()

    out = tmp_path / "report"
    build_report([tmp_path / "results"], out, figures=False)
    tables = out / "world-micro" / "tables"
    assert "known subset" in (tables / "known.md").read_text()
    assert "capital (base " in (tables / "categories.md").read_text()
