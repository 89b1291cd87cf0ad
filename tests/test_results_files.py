"""The results files' atomic writes: a reader sees the old file or the new one, never a partial one."""

from __future__ import annotations

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
