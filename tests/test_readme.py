"""The README's 'Add a strategy' example is real code: it registers, validates options and runs."""

import re
from pathlib import Path

from clbench.run.grid import run_grid
from clbench.train import registry
from tests.conftest import micro_config

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_strategy_example_runs(micro_cache, micro_base_dir, tmp_path):
    block = next(b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL) if "@register" in b)
    try:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme_example"})  # noqa: S102 (our own README)
        assert "my_method" in registry.names()
        cfg = micro_config(tmp_path, cache_dir=micro_cache,
                           strategies='[{name: my_method, label: mine, options: {l1: 0.001}}]')
        ((path, status),) = run_grid(cfg, progress=False, echo=lambda *a: None)
        assert status == "done" and (path / "DONE").exists()
        log = (path / "train_log.jsonl").read_text().splitlines()
        assert '"l1"' in log[0]  # the strategy's own log field reached the training log
    finally:
        registry._STRATEGIES.pop("my_method", None)
