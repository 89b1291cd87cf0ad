"""One micro run of every registered strategy on every backend it declares, and of every plugin: the
test grows with the registry (a new strategy or plugin gets its smoke test by being registered)."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from clbench.train import registry
from tests.conftest import micro_config

HAS_MLX = importlib.util.find_spec("mlx") is not None and importlib.util.find_spec("mlx_lm") is not None
STEPS = 3
# where a strategy's default options are not available on a backend, the options it runs there with
BACKEND_OPTIONS = {("importance_tiers", "mlx"): {"score": "lora_abs"}}  # delta_w needs base-weight gradients


def cases(names, get):
    out = []
    for name in names():
        for backend in get(name).backends:
            marks = [] if backend != "mlx" or HAS_MLX else [pytest.mark.skip(reason="the mlx extra is not installed")]
            out.append(pytest.param(name, backend, id=f"{name}-{backend}", marks=marks))
    return out


def check_run(root, trains: bool) -> dict:
    assert (root / "DONE").exists()
    metrics = json.loads((root / "metrics.json").read_text())
    matrix = json.loads((root / "matrix.json").read_text())
    R = matrix["suites"]["qa"]["R"]
    assert len(R) == 3 and all(v is not None and math.isfinite(v) for row in R for v in row)
    assert metrics["cost"]["optimizer_steps"] == (2 * STEPS if trains else 0)
    for t in (1, 2):
        assert (root / "checkpoints" / f"task_{t}" / "adapter.safetensors").stat().st_size > 0
    return json.loads((root / "config.json").read_text())


def run(tmp_path, micro_cache, backend: str, entry: str):
    from clbench.run.grid import run_grid

    cfg = micro_config(tmp_path, cache_dir=micro_cache, model={"backend": backend}, strategies=f"[{entry}]",
                       train={"steps_per_task": STEPS})
    ((root, status),) = run_grid(cfg, progress=False, echo=lambda *a: None)
    assert status == "done"
    return root


@pytest.mark.parametrize("name,backend", cases(registry.names, registry.get))
def test_every_strategy_runs_on_every_backend_it_declares(name, backend, tmp_path, micro_cache, micro_base_dir):
    cls = registry.get(name)
    options = BACKEND_OPTIONS.get((name, backend), {})
    entry = name if not options else f"{{name: {name}, options: {json.dumps(options)}}}"
    root = run(tmp_path, micro_cache, backend, entry)
    config = check_run(root, cls.trains)
    # the resolved options, defaults included, are what config.json stores
    from clbench.config.options import to_dict

    assert config["strategy"]["options"] == to_dict(cls.options_from(options, name))


@pytest.mark.parametrize("name,backend", cases(registry.plugin_names, registry.get_plugin))
def test_every_plugin_composes_with_sft_on_every_backend_it_declares(name, backend, tmp_path, micro_cache,
                                                                     micro_base_dir):
    root = run(tmp_path, micro_cache, backend, f"{{name: sft, label: sft-{name}, with: [{name}]}}")
    config = check_run(root, True)
    from clbench.config.options import to_dict

    plugin = registry.get_plugin(name)
    assert config["strategy"]["with"] == [{"name": name, "options": to_dict(plugin.options_from({}, name))}]
