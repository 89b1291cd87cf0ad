"""One MLX run: ``clbench.run.one_run.run_one`` (the order of work, files, seeding and resume of every
backend) with :class:`MLXOps`, the operations that use an mlx-lm model.

Same run directory, written by the same code: this module only says how MLX

* loads the model: ``mlx_lm.utils.load_model`` on the base directory (the embedded model's torch
  checkpoint loads as-is: identical starting weights to the torch backend) and picks the device;
* seeds: ``seed_everything`` and MLX's own generator (LoRA initialisation draws from it);
* trains a task (``.trainer``) with one AdamW per tensor (``.optim``);
* writes the adapter: ``mx.save_safetensors`` (trainable tensors only, the header filled by the runner);
  the optimizer state goes into ``strategy_state.pt`` as torch tensors converted from MLX, so the layout
  and its readers stay backend-neutral.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import mlx.core as mx
import numpy as np

from clbench.backends.mlx.lm import MLXLM
from clbench.backends.mlx.model import load_mlx_model, reference_model, use_device
from clbench.backends.mlx.optim import adamw
from clbench.backends.mlx.strategies import make_strategy
from clbench.backends.mlx.trainer import train_task
from clbench.config.experiment import ExperimentConfig, StrategySpec
from clbench.data.streams import Stream
from clbench.errors import ConfigError
from clbench.results.files import atomic_path
from clbench.run import one_run as runner

MLX_PROBE_KINDS = ("exact_match", "multiple_choice", "perplexity")


def atomic_save_safetensors(path: Path, arrays: dict[str, mx.array], metadata: dict[str, str]) -> None:
    """``mx.save_safetensors`` to a temporary file next to ``path``, then renamed over it."""
    with atomic_path(path, suffix=".safetensors") as tmp:  # MLX adds .safetensors to a name without it
        mx.save_safetensors(tmp, arrays, metadata=metadata)


def to_torch(arrays: dict[str, mx.array]) -> dict:
    """MLX arrays as torch tensors for ``torch.save`` (floats as float32, integers as int64)."""
    import torch

    out = {}
    for k, a in arrays.items():
        a = a.astype(mx.float32) if mx.issubdtype(a.dtype, mx.floating) else a.astype(mx.int64)
        out[k] = torch.from_numpy(np.array(a))
    return out


def optimizer_state_from_torch(tensors: dict, params: dict[str, mx.array]) -> dict[str, mx.array]:
    """Inverse of :func:`to_torch` for :meth:`PerTensor.state_tensors`: the step counter back to uint64,
    the learning rate to float32, moments to their parameter's dtype."""
    out = {}
    for k, t in tensors.items():
        name, _, part = k.rpartition("/")
        arr = mx.array(t.numpy())
        dtype = {"step": mx.uint64, "learning_rate": mx.float32}.get(part, params[name].dtype)
        out[k] = arr.astype(dtype)
    return out


def check_stream(stream: Stream) -> None:
    """The probe kinds the MLX view can answer: lm-eval suites run through ``clbench.eval.lm_eval_suite``'s
    ``TemplateLM``, which drives a torch model, so they need the torch backend."""
    for task in stream.tasks:
        for suite in task.probes:
            if suite.kind not in MLX_PROBE_KINDS:
                raise ConfigError(f"{stream.source}: task {task.name!r}, suite {suite.name!r}",
                                  f"probe kind {suite.kind!r} is not available with model.backend: mlx",
                                  MLX_PROBE_KINDS)


class MLXOps(runner.RunOps):
    """The MLX backend's operations for ``clbench.run.one_run.run_one``."""

    checkpoint_meta: ClassVar[dict] = {"backend": "mlx"}

    def check_stream(self, stream):
        check_stream(stream)

    def start(self, cfg):
        return {"backend": "mlx", "mlx_device": use_device(cfg.model.device)}

    def load(self, cfg, base_dir):
        return load_mlx_model(base_dir, cfg.model.dtype, cfg.model.trust_remote_code)

    def make_strategy(self, spec, seed, cfg):
        return make_strategy(spec, seed, cfg)

    def seed(self, seed):
        super().seed(seed)
        mx.random.seed(seed)  # LoRA initialisation draws from MLX's generator

    def reference(self, cfg, base_dir, model):
        return reference_model(model, seed=cfg.model.seed + 1)

    def view(self, model, tokenizer, batch_size):
        return MLXLM(model, tokenizer, batch_size=batch_size)

    def make_optimizer(self, strategy, model, cfg):
        return adamw(strategy.trainable, cfg.train.weight_decay)

    def optimizer_state(self, optimizer):
        return to_torch(optimizer.state_tensors())

    def load_optimizer_state(self, optimizer, state, strategy):
        optimizer.load_state_tensors(optimizer_state_from_torch(state, strategy.trainable))

    def train_task(self, model, tokenizer, strategy, task, optimizer, cfg, seed, global_step, progress):
        return train_task(model, tokenizer, strategy, task, optimizer, cfg.train, seed, global_step, progress)

    def save_adapter(self, path, tensors, metadata):
        atomic_save_safetensors(path, tensors, metadata)

    def load_adapter(self, path):
        return mx.load(str(path))


def run_one(cfg: ExperimentConfig, stream: Stream, spec: StrategySpec, seed: int, base_dir: Path,
            progress: bool = True) -> tuple[Path, str]:
    """Run (or finish, or skip) one MLX run; returns its directory and ``"done"``/``"skipped"``/``"resumed"``."""
    return runner.run_one(cfg, stream, spec, seed, base_dir, progress, ops=MLXOps())
