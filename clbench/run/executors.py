"""Where the runs of a grid execute: this machine (default) or a Ray cluster.

Both executors run the same :class:`Job` s through ``clbench.run.one_run.run_one``, so a run directory is
the same wherever it ran: finished runs are skipped and killed runs resume from their last finished task,
whether the next attempt happens here or on another node.

* :class:`LocalExecutor` — in this process (``jobs: 1``), or a pool of ``jobs`` spawned processes with
  ``train.threads`` torch threads each (default: the CPU count divided by ``jobs``). The first failure
  stops the grid and is raised, as before.
* :class:`RayExecutor` — every run is one Ray task asking for ``executor.num_cpus`` CPUs and
  ``executor.num_gpus`` GPUs, so Ray packs runs onto the GPUs of one node or the nodes of a cluster
  (``docs/distributed.md``). A task that raises or whose worker dies is retried once by Ray
  (``max_retries=1, retry_exceptions=True``; the retry resumes the run directory), then reported; the
  other runs go on. The workers write into the run directories themselves, so ``results_dir`` (and the
  base model: ``model.path`` or ``cache_dir``) must be a path every node sees, e.g. a shared filesystem.
  The driver shows, at the end, every failure with its run directory.

With more than one run at a time (a pool, Ray), the parent prints a status line every few seconds: the
runs done, each running run's task and step, and an ETA from the step and evaluation times measured so
far (``clbench.run.grid_progress``; the workers report through a file in their run directories). In
this process (``jobs: 1``) tqdm's bars show the run's steps instead. ``progress=False`` (``--quiet``)
prints neither.
"""

from __future__ import annotations

import os
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path

from clbench.config.experiment import ExperimentConfig
from clbench.errors import ConfigError
from clbench.results.files import RunFiles
from clbench.run.grid_progress import POLL_SECONDS, GridWatch
from clbench.run.plan import RunSpec


@dataclass(frozen=True)
class Job:
    """One run of a grid: its spec (``clbench.run.plan.RunSpec``: picklable, the stream sent rather than
    re-read, so a reordered or probe-split stream reaches the worker as the driver built it), and what to
    do when another process is writing it."""

    spec: RunSpec
    wait: bool = False  # a run another process is writing: wait for it (else skip it, status "locked")

    @property
    def path(self) -> Path:
        return self.spec.files.root

    @property
    def title(self) -> str:
        return self.spec.title


@dataclass(frozen=True)
class Outcome:
    job: Job
    path: Path
    status: str  # done | skipped | resumed | failed
    error: str | None = None


def run_job(job: Job, progress: bool = False) -> tuple[Path, str]:
    from clbench.run.one_run import run_one

    return run_one(job.spec, progress=progress, wait=job.wait)


def _pool_worker(job: Job, threads: int) -> tuple[Path, str]:
    import torch

    torch.set_num_threads(threads)
    return run_job(job)


class LocalExecutor:
    """Runs in this process (``jobs <= 1``, with progress bars per run) or a spawned process pool."""

    def __init__(self, jobs: int = 1):
        self.jobs = jobs

    def run(self, jobs: list[Job], progress: bool = True, echo=print) -> list[Outcome]:
        out: dict[int, Outcome] = {}
        if self.jobs <= 1:
            for i, job in enumerate(jobs):
                echo(f"[{i + 1}/{len(jobs)}] {job.title}")
                path, status = run_job(job, progress)
                out[i] = Outcome(job, path, status)
                echo(f"    {status}: {path}")
            return [out[i] for i in range(len(jobs))]
        threads = jobs[0].spec.cfg.train.threads if jobs else 0
        threads = threads or max(1, (os.cpu_count() or 1) // self.jobs)
        watch = GridWatch(jobs, self.jobs) if progress else None
        with ProcessPoolExecutor(self.jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_pool_worker, job, threads): i for i, job in enumerate(jobs)}
            pending = set(futures)
            try:
                while pending:
                    ended, pending = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                    for fut in sorted(ended, key=futures.get):
                        i = futures[fut]
                        path, status = fut.result()
                        out[i] = Outcome(jobs[i], path, status)
                        echo(f"    {jobs[i].title}: {status}: {path}")
                        if watch:
                            watch.finished(i)
                    if watch and pending:
                        watch.tick()
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
        return [out[i] for i in range(len(jobs))]


def _ray_worker(job: Job, threads: int) -> tuple[str, str]:
    """One run inside a Ray worker (returns plain strings: the driver rebuilds the ``Path``)."""
    import torch

    torch.set_num_threads(threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    path, status = run_job(job)
    return str(path), status


def _absolute(job: Job) -> Job:
    """Paths a worker resolves as the driver does, whatever its working directory."""
    spec = job.spec
    cfg = replace(spec.cfg, results_dir=str(Path(spec.cfg.results_dir).resolve()))
    return replace(job, spec=replace(spec, cfg=cfg, base_dir=spec.base_dir.resolve(),
                                     files=RunFiles(spec.files.root.resolve())))


class RayExecutor:
    """Each run a Ray task with ``num_cpus`` / ``num_gpus``; failures retried once, then reported."""

    def __init__(self, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0, retries: int = 1):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError("executor", "the ray executor needs Ray: pip install 'clbench[distributed]'",
                              ["local"]) from None
        self.address, self.num_cpus, self.num_gpus, self.retries = address, num_cpus, num_gpus, retries

    def _connect(self) -> None:
        import ray

        if ray.is_initialized():  # a caller (a test, a notebook) may have started Ray itself
            return
        try:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        except ConnectionError as exc:
            raise ConfigError("executor.address", f"no Ray cluster at {self.address!r} ({exc}); start one with "
                              "`ray start --head`, or leave the address empty for a local Ray") from None

    def _slots(self) -> int:
        """How many runs the cluster holds at once (its CPUs and GPUs over what one run asks)."""
        import ray

        have = ray.cluster_resources()
        slots = [have.get(kind, 0) / need for kind, need in (("CPU", self.num_cpus), ("GPU", self.num_gpus)) if need]
        return max(1, int(min(slots, default=1)))

    def run(self, jobs: list[Job], progress: bool = True, echo=print) -> list[Outcome]:
        import ray

        self._connect()
        remote = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=self.retries,
                            retry_exceptions=True)(_ray_worker)
        sent = [_absolute(job) for job in jobs]
        threads = max(1, int(self.num_cpus))
        refs = {remote.options(name=f"clbench:{job.title}").remote(job, job.spec.cfg.train.threads or threads): i
                for i, job in enumerate(sent)}
        out: dict[int, Outcome] = {}
        pending = list(refs)
        watch = GridWatch(sent, self._slots()) if progress else None
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=POLL_SECONDS)
            for ref in ready:
                i = refs[ref]
                try:
                    path, status = ray.get(ref)
                    out[i] = Outcome(jobs[i], Path(path), status)
                except ray.exceptions.RayError as exc:  # failed on its retry too: report it, the rest go on
                    out[i] = Outcome(jobs[i], sent[i].path, "failed", _failure_text(exc))
                echo(f"    {jobs[i].title}: {out[i].status}: {out[i].path}")
                if watch:
                    watch.finished(i)
            if watch and pending:
                watch.tick()
        failed = [o for o in out.values() if o.status == "failed"]
        if failed:
            echo(f"clbench: {len(failed)} of {len(jobs)} runs failed after {self.retries} retr"
                 f"{'y' if self.retries == 1 else 'ies'} (run directories keep their finished tasks):")
            for o in failed:
                echo(f"    {o.job.title}: {o.path}\n        {o.error}")
        return [out[i] for i in range(len(jobs))]


def _failure_text(exc: BaseException) -> str:
    """The last line of the remote error (Ray wraps the worker's traceback in its own exception)."""
    cause = getattr(exc, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    lines = [ln for ln in traceback.format_exception_only(exc)[-1].splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def make_executor(cfg: ExperimentConfig):
    """The executor the config asks for (``executor.kind``; ``jobs`` for the local one)."""
    ex = cfg.executor
    if ex.kind == "ray":
        return RayExecutor(ex.address, ex.num_cpus, ex.num_gpus)
    return LocalExecutor(cfg.jobs)
