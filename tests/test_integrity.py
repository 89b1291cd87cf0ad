"""Issue 23, what clbench wrote earlier: checkpoints and cached rows carry a checksum verified on load
(a changed one is refused with its path), stored results with NaN are an error naming the file, and the
report deletes only clbench's own temporary files."""

from __future__ import annotations

import json
import math

import pytest

from clbench.errors import ConfigError
from tests.cli_helpers import cli, micro_args, tree
from tests.report_runs import make_run
from tests.test_bad_names import refused_leaving_nothing


@pytest.fixture
def finished(micro_cache, micro_base_dir, tmp_path, capsys):
    """A finished one-step-per-task run of the micro stream (its own cache of rows) and its arguments."""
    cache = tmp_path / "cache"
    import shutil

    shutil.copytree(micro_cache / "base_models", cache / "base_models")
    args = micro_args(tmp_path / "results", cache, train={"steps_per_task": 1})
    assert cli(args, capsys)[0] == 0
    return args, next((tmp_path / "results").rglob("seed_0")), cache


def reopen(run, t: int) -> None:
    """Make ``run`` resume from task ``t``'s checkpoint (its later rows removed)."""
    (run / "DONE").unlink()
    for later in (run / "eval").glob("after_*.json"):
        if int(later.stem.split("_")[1]) > t:
            later.unlink()


def test_a_checkpoint_changed_on_disk_is_refused_with_its_path(finished, tmp_path, capsys):
    args, run, _ = finished
    reopen(run, 1)
    state = run / "checkpoints" / "task_1" / "strategy_state.pt"
    data = bytearray(state.read_bytes())
    data[-20] ^= 0xFF  # one flipped bit, still a loadable file for all torch can tell
    state.write_bytes(bytes(data))
    err = refused_leaving_nothing(capsys, args, tmp_path / "results")
    assert err.startswith(f"{state}: changed since clbench wrote it (missing, or its SHA-256 differs from "
                          "checksums.json); clbench will not resume from a checkpoint it cannot vouch for")
    adapter = run / "checkpoints" / "task_1" / "adapter.safetensors"
    state.unlink()
    err = refused_leaving_nothing(capsys, args, tmp_path / "results")
    assert err.startswith(f"{state}: changed since clbench wrote it")
    assert adapter.exists()


def test_a_checkpoint_written_before_checksums_still_resumes(finished, capsys):
    args, run, _ = finished
    reopen(run, 1)
    (run / "checkpoints" / "task_1" / "checksums.json").unlink()
    rc, _, err = cli(args, capsys)
    assert rc == 0, err
    assert (run / "DONE").exists() and (run / "checkpoints" / "task_1" / "checksums.json").exists() is False
    assert json.loads((run / "checkpoints" / "task_2" / "checksums.json").read_text()).keys() == {
        "adapter.safetensors", "strategy_state.pt"}


def test_an_edited_cached_row_is_refused_with_its_path(finished, tmp_path, capsys):
    args, _run, cache = finished
    (row,) = (cache / "rows").glob("base-*.json")
    data = json.loads(row.read_text())
    task = next(iter(data["row"]["scores"]))
    data["row"]["scores"][task]["qa"] = 1.0  # a base model that knew everything
    row.write_text(json.dumps(data))
    args2 = [a if a != str(tmp_path / "results") else str(tmp_path / "results2") for a in args]
    err = refused_leaving_nothing(capsys, args2, tmp_path / "results")
    assert err == (f"{row}: this cache file changed since clbench wrote it (its SHA-256 differs from the one stored "
                   "in it); delete it and clbench computes it again")
    assert not (tmp_path / "results2").exists() or not list((tmp_path / "results2").rglob("after_0.json"))


def test_a_cached_row_without_a_checksum_is_recomputed(finished, tmp_path, capsys):
    args, _run, cache = finished
    (row,) = (cache / "rows").glob("reference-*.json")
    data = json.loads(row.read_text())
    legacy = {"key": data["key"], "row": {**data["row"], "scores": {}}}  # older format, and wrong
    row.write_text(json.dumps(legacy))
    args2 = [a if a != str(tmp_path / "results") else str(tmp_path / "results2") for a in args]
    assert cli(args2, capsys)[0] == 0
    again = json.loads(row.read_text())  # computed again (the same scores), sealed again
    assert again["row"]["scores"] == data["row"]["scores"] and again["row"]["items"] == data["row"]["items"]
    from clbench.results.integrity import unseal

    assert unseal(again, row) is not None
    run2 = next((tmp_path / "results2").rglob("seed_0"))
    assert json.loads((run2 / "eval" / "reference.json").read_text())["scores"] == data["row"]["scores"]


def three_runs(tmp_path):
    R = [[0.5, 0.1, 0.1], [0.5, 0.9, 0.1], [0.4, 0.7, 0.9]]
    return [make_run(tmp_path / "results", "sft", seed, R) for seed in (0, 1, 2)]


def test_nan_in_a_stored_matrix_is_an_error_naming_the_file_not_a_dash(tmp_path, capsys):
    runs = three_runs(tmp_path)
    matrix = runs[1] / "matrix.json"
    text = matrix.read_text()
    line = text.splitlines().index(next(ln for ln in text.splitlines() if "0.9" in ln)) + 1
    matrix.write_text(text.replace("0.9", "NaN", 1))
    rc, _, err = cli(["report", str(tmp_path / "results"), "-o", str(tmp_path / "rep"), "--no-figures"], capsys)
    assert rc == 0, err
    reason = f"matrix.json:{line}: NaN in stored results (not a number clbench writes: the file was changed, or the run"
    assert f"clbench: left out of the report: unreadable: {runs[1]}: {reason}" in err
    numbers = json.loads((tmp_path / "rep" / "toy" / "numbers.json").read_text(),
                         parse_constant=lambda c: pytest.fail(f"numbers.json holds {c}"))
    acc = next(c for c in numbers["tables"]["summary"] if c["column"] == "acc" and c["strategy"] == "sft")
    assert acc["n"] == 2 and sorted(acc["seeds"]) == ["0", "2"]
    err = refused_leaving_nothing(capsys, ["report", str(tmp_path / "results"), "-o", str(tmp_path / "strict"),
                                           "--strict"], tmp_path / "results", one_line=False)
    assert reason in err


def test_read_json_names_the_line_of_an_infinity(tmp_path):
    from clbench.results.atomic import read_json

    path = tmp_path / "metrics.json"
    path.write_text('{\n  "note": "NaN and Infinity in a string are text",\n  "acc": [0.5,\n    -Infinity]\n}\n')
    with pytest.raises(ConfigError, match=r"metrics\.json:4: -Infinity in stored results"):
        read_json(path)
    path.write_text('{"note": "NaN is text here", "acc": 0.5}')
    assert read_json(path)["acc"] == 0.5 and not math.isnan(read_json(path)["acc"])


def test_the_report_deletes_only_its_own_temporary_files(tmp_path, capsys):
    three_runs(tmp_path)
    out = tmp_path / "rep"
    (out / "toy" / "tables").mkdir(parents=True)
    mine = [out / "draft.tmp", out / ".notes.tmp", out / "toy" / "tables" / ".summary.md.1234abcd.tmp",
            out / "toy" / ".x.clbench-1234abcd.tmp.keep"]
    for p in mine:
        p.write_text("the user's")
    leftover = out / "toy" / "tables" / ".summary.md.clbench-0badf00d.tmp"  # what a killed report leaves
    leftover.write_text("half a table")
    rc, _, err = cli(["report", str(tmp_path / "results"), "-o", str(out), "--no-figures"], capsys)
    assert rc == 0, err
    assert all(p.read_text() == "the user's" for p in mine) and not leftover.exists()


def test_a_run_keeps_the_users_files_in_its_folder(finished, capsys):
    """``remove_leftovers`` on resume: a user's ``*.tmp`` in a run folder is not clbench's to delete."""
    args, run, _ = finished
    reopen(run, 1)
    note = run / ".my-notes.tmp"
    note.write_text("keep")
    before = tree(run / "eval")
    assert cli(args, capsys)[0] == 0
    assert note.read_text() == "keep" and set(before) <= set(tree(run / "eval"))
