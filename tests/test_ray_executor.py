"""The Ray executor on a local Ray instance: the same bytes as the local executor, resume, failure reports."""

import os
import shutil
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the Ray executor needs ray: pip install 'clbench[distributed]' "
                                        "(make test installs it)")

import clbench
from clbench.config.experiment import StrategySpec
from clbench.results.files import RunFiles
from clbench.run.executors import Job, RayExecutor
from clbench.run.grid import run_grid
from clbench.run.plan import plan, resolve_entry, run_spec
from tests.cli_helpers import run_contents
from tests.conftest import micro_config

QUIET = {"progress": False, "echo": lambda *a: None}


@pytest.fixture(scope="module")
def local_ray():
    """``ray.init(num_cpus=2)`` whose workers import this checkout's clbench (they inherit the environment)."""
    root = str(Path(clbench.__file__).resolve().parents[1])
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "OMP_NUM_THREADS")}
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, saved["PYTHONPATH"]) if p)
    os.environ["OMP_NUM_THREADS"] = "1"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def results_of(path: Path) -> dict:
    """Every result file of a run, wall times left out; provenance carries host names and clock times."""
    return run_contents(path, skip=("provenance.json",))


def kill_after(files: RunFiles, t: int) -> None:
    """Leave a run directory as a run killed while training task ``t`` leaves it (rows are written last)."""
    for p in (files.after(t), files.matrix, files.metrics, files.train_log, files.done, files.task_log(t)):
        p.unlink(missing_ok=True)
    shutil.rmtree(files.checkpoint(t), ignore_errors=True)
    shutil.rmtree(files.predictions(t), ignore_errors=True)


def test_ray_equals_local_resumes_a_killed_run_and_reports_a_failure(local_ray, micro_cache, micro_base_dir,
                                                                     tmp_path):
    # 1. a 2-run grid through Ray gives the local executor's results, byte for byte (wall-clock fields aside)
    local = run_grid(micro_config(tmp_path / "local", cache_dir=micro_cache, seeds="[0, 1]"), **QUIET)
    ray_cfg = micro_config(tmp_path / "ray", cache_dir=micro_cache, seeds="[0, 1]", **{"executor.kind": "ray"})
    remote = run_grid(ray_cfg, **QUIET)
    assert [s for _, s in remote] == ["done", "done"]
    expected = [results_of(p) for p, _ in local]
    assert "matrix.json" in expected[0] and "checkpoints/task_2/adapter.safetensors" in expected[0]
    assert [results_of(p) for p, _ in remote] == expected
    assert (remote[0][0] / "tensorboard").is_dir()

    # 2. a killed run resumes on Ray and ends as the uninterrupted one; a finished run is skipped
    kill_after(RunFiles(remote[0][0]), 2)
    again = run_grid(ray_cfg, **QUIET)
    assert [s for _, s in again] == ["resumed", "skipped"]
    assert [results_of(p) for p, _ in again] == expected

    # 3. a run that fails (on its retry too) is reported with its directory; the other run finishes
    kill_after(RunFiles(remote[1][0]), 1)
    stream, _ = plan(ray_cfg)
    resumable = Job(run_spec(ray_cfg, stream, resolve_entry(StrategySpec("sft"), ray_cfg), 1, micro_base_dir))
    broken = Job(run_spec(ray_cfg, stream, resolve_entry(StrategySpec("sft", label="broken"), ray_cfg), 0,
                          tmp_path / "no-such-checkpoint"))
    lines = []
    bad, ok = RayExecutor(num_cpus=1).run([broken, resumable], progress=False, echo=lines.append)
    assert (ok.status, bad.status) == ("resumed", "failed")
    assert results_of(ok.path) == expected[1]
    assert not RunFiles(bad.path).done.exists()
    assert bad.path == broken.path.resolve() and "no-such-checkpoint" in bad.error
    report = "\n".join(lines)
    assert "1 of 2 runs failed after 1 retry" in report and str(bad.path) in report
