"""``runs_frame``: stored results into pandas in one call, from one path or a list of paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from clbench.errors import ConfigError
from clbench.results.aggregate import runs_frame
from tests.report_runs import make_run

R = {0: [[.8, 0, 0], [.6, .9, 0], [.5, .3, .9]], 1: [[.8, 0, 0], [.7, .8, .1], [.6, .4, 1.0]]}


def test_a_string_a_path_and_a_list_give_the_same_frame_and_never_read_from_the_root(tmp_path, monkeypatch):
    for seed in (0, 1):
        make_run(tmp_path / "a", "sft", seed, R[seed])
        make_run(tmp_path / "b", "replay", seed, R[seed], strategy="replay")
    searched = []
    real_rglob = Path.rglob
    monkeypatch.setattr(Path, "rglob", lambda self, pattern: searched.append(str(self)) or real_rglob(self, pattern))
    one = runs_frame(str(tmp_path / "a"))
    assert set(searched) == {str(tmp_path / "a")}  # a string is one path, not its characters ("/" first)
    assert one.equals(runs_frame(tmp_path / "a"))
    both = runs_frame([str(tmp_path / "a"), tmp_path / "b"])
    assert list(both["strategy"]) == ["replay", "replay", "sft", "sft"] and list(both["seed"]) == [0, 1, 0, 1]
    # ACC of seed 1: the mean of the last row, by hand
    assert both.loc[(both.strategy == "sft") & (both.seed == 1), "acc"].item() == pytest.approx((.6 + .4 + 1.0) / 3)
    assert {"forgetting", "learning_acc", "train_seconds", "path", "order"} <= set(both.columns)


def test_no_runs_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no finished runs"):
        runs_frame(str(tmp_path))
