"""The results files' atomic writes: a reader sees the old file or the new one, never a partial one."""

from __future__ import annotations

import json
import os

import pytest

from clbench.results.files import atomic_path, atomic_write_bytes, atomic_write_json, read_json


def test_atomic_write_replaces_the_file_instead_of_writing_into_it(tmp_path):
    """A file opened before the write (here: a hard link to it) keeps the old bytes, which is true only
    when the new content goes to a new file renamed over the old name — writing in place changes both."""
    path = tmp_path / "metrics.json"
    path.write_bytes(b"old")
    held = tmp_path / "held"
    os.link(path, held)
    before = path.stat().st_ino
    atomic_write_bytes(path, b"new content")
    assert path.read_bytes() == b"new content"
    assert held.read_bytes() == b"old" and path.stat().st_ino != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["held", "metrics.json"]  # no temporary left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "row.json"
    atomic_write_json(path, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(b'{"a": ')  # half a file, then the writer dies
        raise RuntimeError("killed")
    assert read_json(path) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["row.json"]

    def no_rename(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(path, {"a": 2})
    assert read_json(path) == {"a": 1} and [p.name for p in path.parent.iterdir()] == ["row.json"]


def test_metrics_of_an_older_version_are_recomputed_from_the_matrix_when_read(tmp_path):
    """A run written when LA still counted the pretrained task (metrics_version 1): load_run recomputes every
    suite from matrix.json, with LA over the trained tasks only; a current file is returned as stored."""
    from clbench.results.files import current_metrics, load_run
    from clbench.results.metrics import METRICS_VERSION

    R = [[0.5, 0.0, 0.0], [0.2, 1.0, 0.0], [0.1, 0.25, 0.75]]  # task 0 pretrained: base knew half
    matrix = {"tasks": ["world", "medical", "notes"],
              "suites": {"qa": {"R": R, "base": [0.5, 0.0, 0.0], "reference": [0.0, 0.0, 0.0],
                                "higher_is_better": True, "kind": "exact_match"}}}
    old = {"primary_metric": "qa", "final_loss": {"medical": 0.4, "notes": 0.5}, "cost": {"train_seconds": 1.0},
           "suites": {"qa": {"learning_acc": (0.5 + 1.0 + 0.75) / 3, "acc": 0.35}}}
    run = tmp_path / "run"
    for name, obj in (("config.json", {}), ("provenance.json", {}), ("matrix.json", matrix), ("metrics.json", old)):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(json.dumps(obj))
    got = load_run(run)["metrics"]
    assert got["metrics_version"] == METRICS_VERSION and got["cost"] == old["cost"]
    assert got["suites"]["qa"]["learning_acc"] == pytest.approx((1.0 + 0.75) / 2)
    assert got["suites"]["qa"]["acc"] == pytest.approx((0.1 + 0.25 + 0.75) / 3)
    assert got["suites"]["qa"]["general_retention"] == pytest.approx(0.1 - 0.5)
    current = {**old, "metrics_version": METRICS_VERSION}
    assert current_metrics(current, matrix) is current  # nothing recomputed
