"""The README's 'Add a strategy' section is real: its example registers, validates options and runs, and
its command trains the strategy next to sft on the smoke preset to a table of non-zero scores."""

import re
import warnings
from pathlib import Path

import pytest

from clbench.run.grid import run_grid
from clbench.train import registry
from tests.cli_helpers import cli
from tests.conftest import micro_config

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_strategy():
    block = next(b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL) if "@register" in b)
    exec(compile(block, "README.md", "exec"), {"__name__": "readme_example"})  # noqa: S102 (our own README)


def test_readme_strategy_example_runs(micro_cache, micro_base_dir, tmp_path):
    try:
        readme_strategy()
        assert "my_method" in registry.names()
        cfg = micro_config(tmp_path, cache_dir=micro_cache,
                           strategies='[{name: my_method, label: mine, options: {l1: 0.001}}]')
        ((path, status),) = run_grid(cfg, progress=False, echo=lambda *a: None)
        assert status == "done" and (path / "DONE").exists()
        log = (path / "train_log.jsonl").read_text().splitlines()
        assert '"l1"' in log[0]  # the strategy's own log field reached the training log
    finally:
        registry._STRATEGIES.pop("my_method", None)


def summary_rows(out: str) -> dict[str, dict[str, str]]:
    """``{strategy: {header: cell}}`` of the summary table ``clbench run`` prints."""
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split(" | ")]
    rows = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[1:]]
    return {r[0]: dict(zip(header, r)) for r in rows if r[0] != "Strategy"}


@pytest.mark.slow
def test_the_readme_smoke_command_prints_non_zero_scores_for_the_new_strategy_and_sft(
        micro_cache, micro_base_dir, tmp_path, monkeypatch, capsys):
    command = next(line for line in README.read_text().splitlines() if "clbench run --smoke" in line)
    args = command.split("clbench ", 1)[1].split()
    assert args == ["run", "--smoke", "--strategies", "sft,my_method"]
    monkeypatch.setenv("CLBENCH_CACHE", str(micro_cache))  # the micro model the preset names, built once
    try:
        readme_strategy()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rc, out, err = cli([*args, "--results", str(tmp_path / "results"), "--report-dir",
                                str(tmp_path / "report"), "--quiet"], capsys)
        assert rc == 0, err
        assert not [w for w in caught if "requires_grad" in str(w.message)]  # the logged penalty is a tensor
        rows = summary_rows(out)
        assert set(rows) == {"sft", "my_method"}
        for label in rows:
            assert float(rows[label]["ACC ↑"].strip("*†")) > 0 and float(rows[label]["LA ↑"].strip("*†")) > 0
    finally:
        registry._STRATEGIES.pop("my_method", None)
