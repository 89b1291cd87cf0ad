"""Training curves where researchers look for them: TensorBoard event files in every run directory.

Written through ``torch.utils.tensorboard`` (it ships with torch; its one requirement, the
``tensorboard`` package, is a dependency of clbench — and of avalanche-lib already — and is what reads
the files anyway, so no second writer library is needed; tensorboardX would add a package to do the
same). One writer per run, in ``<run>/tensorboard/``. Each step's scalars are written as the step ends
(the train loop's ``on_step``, :meth:`RunCurves.step`) and flushed every :data:`FLUSH_EVERY_STEPS` steps
and after every task, so the loss curve of a task in training is on disk at most that many steps behind.
A resumed run appends a new event file for the tasks it still trains; a task killed part-way has the
steps it had flushed in the old file, and all of its steps again in the new one (TensorBoard shows both).

Tags (x axis: the run's global optimizer step):

* ``train/loss``, ``train/lr``, ``train/updated_elements``, ``train/step_time`` per step, and every
  other numeric field a strategy adds to the step log under ``strategy/<field>``;
* ``tiers/tier_<k>_updated`` (1 when tier k updated at that step), from the step log's ``active_tiers``;
* after each task: ``probe/<suite>/<task>`` for every probe score (step 0: the base model),
  ``tiers/tier_<k>_drift`` and ``tiers/tier_<k>_updates_total`` from the strategy's diagnostics, and
  every other top-level numeric diagnostic under ``diagnostics/<key>``.

``log.wandb: true`` sends the same scalars to Weights & Biases (``pip install wandb``; ``log.wandb_mode:
offline`` keeps them local). Nothing is sent to a network unless that switch is on.

    tensorboard --logdir results/bench          # every run of an experiment, side by side
"""

from __future__ import annotations

import math
from pathlib import Path

from clbench.errors import ConfigError

# Flush the event file every this many steps while a task trains. On a local disk the writer's thread
# appends each queued event to the file within moments anyway; a flush waits until it has (so a reader
# sees every step up to this one), and on a filesystem that cannot append (a cloud bucket) it is what
# writes the file at all, beside the writer's own timer (120 s, torch's SummaryWriter default: too late
# to watch a task). It moves a few hundred bytes (no fsync), nothing beside 10 training steps.
FLUSH_EVERY_STEPS = 10

STEP_FIELDS = {"loss": "train/loss", "lr": "train/lr", "updated_elements": "train/updated_elements",
               "step_time": "train/step_time", "tokens": "train/tokens"}
NOT_SCALARS = {"task", "step", "global_step", "active_tiers"}


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def step_scalars(rec: dict) -> dict[str, float]:
    """The scalars of one step-log record (``train_log/task_<t>.jsonl``)."""
    out = {}
    for key, value in rec.items():
        v = _number(value)
        if key in NOT_SCALARS or v is None:
            continue
        out[STEP_FIELDS.get(key, f"strategy/{key}")] = v
    return out


def tier_list(diagnostics: dict) -> list[dict]:
    tiers = diagnostics.get("tiers") if isinstance(diagnostics, dict) else None
    if isinstance(tiers, dict):  # TieredUpdater's object holds the list one level down
        tiers = tiers.get("tiers")
    return tiers if isinstance(tiers, list) and all(isinstance(t, dict) for t in tiers) else []


def task_scalars(scores: dict, diagnostics: dict) -> dict[str, float]:
    """The scalars logged after a task: probe scores and the strategy's diagnostics."""
    out = {}
    for task, suites in scores.items():
        for suite, value in suites.items():
            if _number(value) is not None:
                out[f"probe/{suite}/{task}"] = float(value)
    for k, tier in enumerate(tier_list(diagnostics)):
        for field in ("drift", "updates_total"):
            if _number(tier.get(field)) is not None:
                out[f"tiers/tier_{k}_{field}"] = float(tier[field])
    for key, value in (diagnostics or {}).items():
        if _number(value) is not None:
            out[f"diagnostics/{key}"] = float(value)
    return out


class RunCurves:
    """The writers of one run (TensorBoard, optionally W&B); every method a no-op when none is on.

    Writers are opened at the first scalar, so a run that fails before it writes anything (a refused
    resume, a model that does not load) leaves no event file behind."""

    def __init__(self, factories: list):
        self.factories = factories
        self.writers: list = []
        self.n_tiers = 0
        self.streamed_to = 0  # the last global step whose step scalars :meth:`step` wrote

    def _write(self, scalars: dict[str, float], step: int) -> None:
        if self.factories and not self.writers:
            self.writers = [make() for make in self.factories]
        for w in self.writers:
            w.scalars(scalars, step)

    def probes(self, scores: dict, step: int) -> None:
        """Probe scores of a row (the base model's at step 0)."""
        self._write(task_scalars(scores, {}), step)
        self.flush()

    def step(self, rec: dict) -> None:
        """One step as it ends (a step-log record): its scalars, flushed every :data:`FLUSH_EVERY_STEPS`
        steps of the task."""
        if not self.factories:
            return
        self._write(step_scalars(rec), int(rec["global_step"]))
        self.streamed_to = int(rec["global_step"])
        if int(rec["step"]) % FLUSH_EVERY_STEPS == 0:
            self.flush()

    def task(self, log: list[dict], scores: dict, diagnostics: dict, global_step: int) -> None:
        """One finished task: the step scalars :meth:`step` did not write already and each step's tier
        updates (their number is known from the diagnostics now), then the probe scores and diagnostics
        at its last step."""
        if not self.factories:
            return
        self.n_tiers = max(self.n_tiers, len(tier_list(diagnostics)))
        for rec in log:
            scalars = step_scalars(rec) if int(rec["global_step"]) > self.streamed_to else {}
            active = rec.get("active_tiers")
            if isinstance(active, list):
                for k in range(max(self.n_tiers, max(active, default=-1) + 1)):
                    scalars[f"tiers/tier_{k}_updated"] = float(k in active)
            if scalars:
                self._write(scalars, int(rec["global_step"]))
        self._write(task_scalars(scores, diagnostics), global_step)
        self.flush()

    def flush(self) -> None:
        for w in self.writers:
            w.flush()

    def close(self) -> None:
        for w in self.writers:
            w.close()


class _TensorBoard:
    def __init__(self, log_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def scalars(self, scalars: dict[str, float], step: int) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, root: Path, record: dict, project: str, mode: str):
        try:
            import wandb
        except ImportError:
            raise ConfigError("log.wandb", "Weights & Biases logging needs `pip install wandb`") from None
        strategy = record.get("strategy", {})
        name = f"{record.get('experiment')}/{strategy.get('label')}/seed_{record.get('seed')}"
        self.run = wandb.init(project=project, name=name, dir=str(root), config=record, mode=mode,
                              reinit="create_new")

    def scalars(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.run.finish()


def tensorboard_dir(run_root: Path) -> Path:
    return Path(run_root) / "tensorboard"


def tensorboard_command(results) -> str | None:
    """``tensorboard --logdir <paths>`` for the results paths that hold event files, else ``None``."""
    import shlex

    have = [str(p) for p in results if Path(p).is_dir() and next(Path(p).rglob("tensorboard"), None) is not None]
    if len(have) <= 1:
        return f"tensorboard --logdir {shlex.quote(have[0])}" if have else None
    return "tensorboard --logdir_spec " + ",".join(shlex.quote(f"{Path(p).name}:{p}") for p in have)


def open_curves(log_cfg, run_root: Path, record: dict) -> RunCurves:
    """The writers ``log_cfg`` (``ExperimentConfig.log``) asks for, for the run in ``run_root``."""
    factories: list = []
    if log_cfg.tensorboard:
        factories.append(lambda: _TensorBoard(tensorboard_dir(run_root)))
    if log_cfg.wandb:
        try:
            import wandb  # noqa: F401  (checked now: a missing package fails before training, not after)
        except ImportError:
            raise ConfigError("log.wandb", "Weights & Biases logging needs `pip install wandb`") from None
        factories.append(lambda: _WandB(Path(run_root), record, log_cfg.wandb_project, log_cfg.wandb_mode))
    return RunCurves(factories)
