"""Shipped presets: the micro model and the smoke run, for trying a strategy in a minute or two.

The default embedded model (4 layers, hidden 128) pretrains for 1,200 steps before anything else runs;
the *micro* model (2 layers, hidden 32, a 300-token vocabulary, 600 pretraining steps) builds in
seconds; the test suite uses it with fewer pretraining steps (``tests/conftest.py``). The *smoke* preset trains on the
``micro`` stream (two entities per trained task) with the micro model, long enough that ``sft`` answers
some of the probes — a table of non-zero scores a new strategy can be compared with::

    clbench run --smoke --strategies sft,my_method

A preset is a set of ``--set`` overrides applied before the user's own (``--set`` and the other flags
win over it), so ``clbench run --smoke --set train.steps_per_task=20`` is the same run, shorter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MICRO_MODEL = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64, "vocab_size": 300,
               "pretrain_steps": 600, "pretrain_batch_size": 16}
# The tests pretrain it for 150 steps only: they check what the code does, not what the model learns.
# With 150 steps the micro model answers none of the held-out questions (qa 0 everywhere), with 600 it
# answers half of the pretrained task's and learns some of each new task's (a smoke run's sft: LA ≈ 0.4).
TEST_PRETRAIN_STEPS = 150

SMOKE: dict[str, Any] = {
    "name": "smoke", "stream": "micro", "seeds": [0], "strategies": ["sft"], "jobs": 1,
    "model": MICRO_MODEL,
    "train": {"steps_per_task": 60, "batch_size": 8, "lr": 5e-3, "threads": 1},
}


def overrides(preset: dict, prefix: str = "") -> list[str]:
    """A nested preset as ``--set`` strings (``model.hidden_size=32``, ``seeds=[0]``)."""
    out = []
    for key, value in preset.items():
        if isinstance(value, dict):
            out += overrides(value, f"{prefix}{key}.")
        elif isinstance(value, list):
            out.append(f"{prefix}{key}=[{', '.join(map(str, value))}]")
        else:
            out.append(f"{prefix}{key}={value}")
    return out


def smoke_config(results_dir: str | Path, strategies: list[str], **fields):
    """The smoke preset's experiment with results under ``results_dir``; ``fields`` override it
    (``steps_per_task=4`` is ``train.steps_per_task``; ``cache_dir=...`` a top-level field)."""
    from clbench.config.experiment import TrainConfig, load_config

    train = {f for f in TrainConfig.__dataclass_fields__}
    extra = [f"{'train.' if k in train else ''}{k}={v}" for k, v in fields.items()]
    return load_config(None, [*overrides(SMOKE), f"results_dir={results_dir}",
                              f"strategies=[{', '.join(strategies)}]", *extra])
