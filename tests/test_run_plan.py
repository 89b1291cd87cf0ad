"""One run, one spec: each run locks and writes its own directory, the grid refuses a row before anything
is written, and results are reported from where they were written."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from clbench.results import atomic
from clbench.run.grid import run_grid
from clbench.run.lock import LOCK_NAME
from tests.conftest import micro_config

QUIET = {"progress": False, "echo": lambda *a: None}


def _run_folder(path: Path) -> Path | None:
    """The ``seed_<k>`` folder a result file belongs to (None: a file outside any run)."""
    return next((p for p in Path(path).parents if p.name.startswith("seed_")), None)


def test_every_run_of_a_two_order_grid_writes_only_under_its_own_lock(micro_cache, micro_base_dir, tmp_path,
                                                                     monkeypatch):
    """The reversed run locks ``order-reversed/seed_0`` (not the given run's ``seed_0``) while it writes,
    and removes the temporary files a killed write left in its own folder."""
    cfg = micro_config(tmp_path, cache_dir=micro_cache, orders="[given, reversed]", seeds="[0]")
    label = tmp_path / "results" / "default" / "micro" / "sft"
    leftover = label / "order-reversed" / "seed_0" / ".config.json.dead.tmp"  # a write killed earlier
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"partial")
    unlocked: list[str] = []
    real = atomic.atomic_path

    @contextlib.contextmanager
    def watched(path, *args, **kwargs):
        run = _run_folder(path)
        if run is not None:
            lock = run / LOCK_NAME
            held = lock.exists() and json.loads(lock.read_text() or "{}").get("pid") == os.getpid()
            if not held:
                unlocked.append(str(Path(path).relative_to(label)))
        with real(path, *args, **kwargs) as tmp:
            yield tmp

    monkeypatch.setattr(atomic, "atomic_path", watched)
    results = run_grid(cfg, **QUIET)
    assert [(p.relative_to(label).as_posix(), s) for p, s in results] == \
        [("seed_0", "done"), ("order-reversed/seed_0", "done")]
    assert unlocked == []  # every result file was written by the holder of its own run's lock
    assert not leftover.exists()
    assert not any(label.rglob(LOCK_NAME))  # both locks released
