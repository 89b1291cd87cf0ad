"""Task orders as a grid axis: parsing, the recorded and trained permutation, re-indexing, order averages."""

import json

import pytest
from safetensors import safe_open

from clbench.errors import ConfigError
from clbench.reporting.build import build_report
from clbench.results.files import RunFiles
from clbench.run.grid import run_grid
from clbench.run.orders import parse_orders, reindex
from tests.conftest import micro_config

QUIET = {"progress": False, "echo": lambda *a: None}


def test_parse_orders(micro_stream):
    names = [t.name for t in micro_stream.tasks]
    assert names == ["general", "medical", "notes"]
    given, rev = parse_orders(["given", "reversed"], micro_stream)
    assert (given.name, given.permutation) == ("given", (0, 1, 2))
    assert (rev.name, rev.permutation) == ("reversed", (0, 2, 1))  # the pretrained task stays first
    (explicit,) = parse_orders([["general", "notes", "medical"]], micro_stream)
    assert (explicit.name, explicit.permutation) == ("notes>medical", (0, 2, 1))
    a = parse_orders([{"random": 2, "seed": 3}], micro_stream)
    assert sorted(o.permutation for o in a) == [(0, 1, 2), (0, 2, 1)]  # both orders of 2 trained tasks
    assert a == parse_orders([{"random": 2, "seed": 3}], micro_stream)  # seeded: the same draws
    with pytest.raises(ConfigError, match="only 2 orders"):
        parse_orders([{"random": 3}], micro_stream)
    with pytest.raises(ConfigError, match="every trained task exactly once"):
        parse_orders([["notes"]], micro_stream)
    with pytest.raises(ConfigError, match="unknown task 'surgery'"):
        parse_orders([["surgery", "notes"]], micro_stream)
    with pytest.raises(ConfigError, match="appears twice"):
        parse_orders(["reversed", ["notes", "medical"]], micro_stream)
    with pytest.raises(ConfigError, match="unknown order"):
        parse_orders(["backwards"], micro_stream)


def test_an_explicit_order_that_repeats_a_task_is_refused(micro_stream):
    for entry in (["medical", "notes", "medical"], ["medical", "medical"], ["general", "notes", "notes"]):
        with pytest.raises(ConfigError, match="every trained task exactly once"):
            parse_orders([entry], micro_stream)


def test_reindex_maps_rows_and_columns_each_by_the_permutation():
    """An asymmetric R of a run trained in the order general > notes > medical: row p / column p are the
    task at training position p. Re-indexed, R'[a][b] is the score on stream task b after training stream
    task a (a transpose, or the permutation applied to one axis only, differs)."""
    R = [[0.9, 0.1, 0.2], [0.8, 0.3, 0.7], [0.6, 0.5, 0.4]]  # training order: general, notes, medical
    matrix = {"suites": {"qa": {"R": R}}, "order": {"permutation": [0, 2, 1]}}
    # stream order: general, medical, notes; medical was trained at position 2, notes at position 1
    assert reindex(matrix, "qa") == [[0.9, 0.2, 0.1], [0.6, 0.4, 0.5], [0.8, 0.7, 0.3]]
    assert reindex({"suites": {"qa": {"R": R}}}, "qa") == R


def test_orders_are_recorded_trained_reindexed_and_averaged(micro_cache, micro_base_dir, tmp_path):
    cfg = micro_config(tmp_path, cache_dir=micro_cache, orders="[given, reversed]", seeds="[0]")
    results = run_grid(cfg, **QUIET)
    paths = [p for p, _ in results]
    assert [p.relative_to(tmp_path / "results" / "default" / "micro" / "sft").as_posix() for p in paths] == \
        ["seed_0", "order-reversed/seed_0"]
    given, rev = RunFiles(paths[0]), RunFiles(paths[1])
    cfg_rev = json.loads(rev.config.read_text())
    assert cfg_rev["order"] == {"name": "reversed", "permutation": [0, 2, 1],
                                "stream_tasks": ["general", "medical", "notes"]}
    assert cfg_rev["stream"]["tasks"] == ["general", "notes", "medical"]
    assert "order" not in json.loads(given.config.read_text())
    # the recorded permutation is the one trained: the checkpoint after training position 1 is 'notes'
    for files, first in ((rev, "notes"), (given, "medical")):
        with safe_open(files.checkpoint(1) / "adapter.safetensors", "pt") as fh:
            assert json.loads(fh.metadata()["clbench"])["task"] == first
    # re-indexing puts rows and columns in the stream file's order
    m_rev = json.loads(rev.matrix.read_text())
    R = m_rev["suites"]["qa"]["R"]
    re = reindex(m_rev, "qa")
    pos = {0: 0, 1: 2, 2: 1}  # stream task -> training position in the reversed run
    assert re == [[R[pos[a]][pos[b]] for b in range(3)] for a in range(3)]
    assert re[2][1] == R[1][2]  # score on medical (stream col 1) after training notes (stream row 2)
    m_given = json.loads(given.matrix.read_text())
    assert reindex(m_given, "qa") == m_given["suites"]["qa"]["R"]
    # the report averages over orders: the mean of per-order seed means, and their spread
    build_report([tmp_path / "results"], tmp_path / "report", figures=False)
    numbers = json.loads((tmp_path / "report" / "micro" / "numbers.json").read_text())["tables"]["orders"]["sft"]

    def metric(path, key):
        return json.loads(RunFiles(path).metrics.read_text())["suites"]["qa"][key]

    for key in ("acc", "forgetting", "learning_acc"):
        by_hand = {"given": metric(paths[0], key), "reversed": metric(paths[1], key)}
        assert numbers[key]["orders"] == pytest.approx(by_hand)
        assert numbers[key]["mean"] == pytest.approx((by_hand["given"] + by_hand["reversed"]) / 2)
        assert numbers[key]["spread"] == pytest.approx(abs(by_hand["given"] - by_hand["reversed"]))
    table = (tmp_path / "report" / "micro" / "tables" / "orders.md").read_text()
    assert "| sft | 2 |" in table
    # each order its own section, every row compared with the reference in its own order
    summary = (tmp_path / "report" / "micro" / "tables" / "summary.md").read_text()
    reversed_summary = (tmp_path / "report" / "micro-order-reversed" / "tables" / "summary.md").read_text()
    assert "| sft | 1 |" in summary and "@reversed" not in summary
    assert "| sft @reversed | 1 |" in reversed_summary
