"""Shared fixtures: a microscopic stream, config and base model, built once per test session.

No test reaches a hub: the offline switches are set before anything imports transformers.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import pytest
import torch

torch.set_num_threads(1)

from clbench.config.presets import MICRO_MODEL as SHIPPED_MICRO  # clbench run --smoke's model
from clbench.config.presets import TEST_PRETRAIN_STEPS

MICRO_MODEL = {**SHIPPED_MICRO, "pretrain_steps": TEST_PRETRAIN_STEPS}  # the shipped micro model, pretrained less
MICRO_TRAIN = {"steps_per_task": 6, "batch_size": 8, "lr": 5e-3, "threads": 1}


def micro_config(tmp_path, **sections):
    """An ExperimentConfig on the micro stream with a microscopic model; ``sections`` override fields."""
    from clbench.config.experiment import load_config

    overrides = ["stream=micro", f"results_dir={tmp_path / 'results'}", "seeds=[0]", "jobs=1", "strategies=[sft]",
                 f"cache_dir={sections.pop('cache_dir', tmp_path / 'cache')}"]
    for section, values in (("model", MICRO_MODEL), ("train", MICRO_TRAIN)):
        for k, v in {**values, **sections.pop(section, {})}.items():
            overrides.append(f"{section}.{k}={v}")
    for k, v in sections.items():
        overrides.append(f"{k}={v}")
    return load_config(None, overrides)


@pytest.fixture(scope="session")
def micro_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("clbench-cache")


@pytest.fixture(scope="session")
def micro_stream():
    from clbench.data.streams import load_stream

    return load_stream("micro")


@pytest.fixture(scope="session")
def micro_base_dir(micro_cache, micro_stream, tmp_path_factory):
    """The micro base model directory (a real save_pretrained checkpoint), built once."""
    from clbench.modeling.tiny import build_base_model

    cfg = micro_config(tmp_path_factory.mktemp("cfg"), cache_dir=micro_cache)
    return build_base_model(cfg.model, micro_stream, micro_cache, progress=False)


@pytest.fixture
def micro_cfg(tmp_path, micro_cache, micro_base_dir):
    """Config whose cache already holds the micro base model."""
    return micro_config(tmp_path, cache_dir=micro_cache)


@pytest.fixture
def micro_model(micro_base_dir):
    """A fresh ``(model, tokenizer)`` loaded from the micro base checkpoint."""
    from clbench.modeling.loading import load_causal_lm

    return load_causal_lm(micro_base_dir, "cpu", "float32")
