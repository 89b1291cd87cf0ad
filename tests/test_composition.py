"""Composition is configuration: plugins added with a grid entry's ``with:``, hooks in a fixed order,
per-row training fields, and the errors for what cannot be composed."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from clbench.config.options import opt
from clbench.errors import ConfigError
from clbench.train import registry
from clbench.train.plugin import Composed, Plugin, attach
from tests.conftest import micro_config
from tests.nested_helpers import begin, make, token_batch, train_step

DOC = Path(__file__).resolve().parent.parent / "docs" / "composition.md"


class Recording(Plugin):
    """Records the hooks the runner and the step call on it, with a tag."""

    @dataclass(frozen=True)
    class Options:
        tag: str = opt("a", "tag in the log")

    log: ClassVar[list] = []

    def _note(self, hook):
        Recording.log.append(f"{self.options.tag}.{hook}")

    def prepare_model(self, model):
        self._note("prepare_model")
        return model

    def before_task(self, task, model):
        self._note("before_task")

    def before_step(self, step):
        self._note("before_step")

    def loss(self, model, batch, inner):
        self._note("loss")
        out = inner(model, batch)
        out.logs[f"seen_{self.options.tag}"] = 1.0
        return out

    def after_update(self, ctx):
        self._note("after_update")

    def after_task(self, task, model):
        self._note("after_task")

    def step_log(self):
        return {f"tag_{self.options.tag}": 1}


def test_plugins_run_after_the_strategy_in_the_order_listed():
    Recording.log = []
    s, model = make("layer_tiers")
    composed = Composed(s, [attach(Recording, Recording.Options("a"), s), attach(Recording, Recording.Options("b"), s)])
    composed.prepare_model(model)
    begin(composed, model)
    import torch

    opt_ = torch.optim.AdamW(s.backend.param_groups(s, 1e-2), lr=1e-2)
    train_step(composed, model, opt_, 1, [token_batch(1)])
    composed.after_task(None, model)
    # loss: b wraps a, which wraps the strategy's loss, so b is entered first
    assert Recording.log == ["a.prepare_model", "b.prepare_model", "a.before_task", "b.before_task",
                             "a.before_step", "b.before_step", "b.loss", "a.loss", "a.after_update",
                             "b.after_update", "a.after_task", "b.after_task"]
    log = composed.step_log()
    assert log["active_tiers"] == [0] and log["tag_a"] == log["tag_b"] == 1  # the strategy's and the plugins'
    assert composed.trainable is s.trainable and composed.grad_names(2) == s.grad_names(2)


def test_the_documented_plugin_runs_with_a_row_of_its_own_training_fields(tmp_path, micro_cache, micro_base_dir):
    from clbench.run.grid import run_grid

    block = next(b for b in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL) if "@register_plugin" in b)
    try:
        exec(compile(block, str(DOC), "exec", dont_inherit=True), {"__name__": "composition_doc"})  # noqa: S102
        grid = ("[{name: layer_tiers, label: tiers-l2, with: [{name: weight_l2, options: {lam: 0.001}}], "
                "train: {steps_per_task: 4}}, {name: sft, optimizer: null}]")
        cfg = micro_config(tmp_path, cache_dir=micro_cache, strategies=grid)
        (composed, _), (plain, _) = run_grid(cfg, progress=False, echo=lambda *a: None)
        config = json.loads((composed / "config.json").read_text())
        assert config["strategy"]["with"] == [{"name": "weight_l2", "options": {"lam": 0.001}}]
        assert config["train"]["steps_per_task"] == 4  # the row's own field ...
        log = [json.loads(x) for x in (composed / "train_log.jsonl").read_text().splitlines()]
        assert len(log) == 8 and all(r["weight_l2"] > 0 and "active_tiers" in r for r in log)
        other = json.loads((plain / "config.json").read_text())
        assert other["train"]["steps_per_task"] == cfg.train.steps_per_task != 4  # ... and nobody else's
        assert "with" not in other["strategy"]
        # a changed plugin option is another experiment: the stored run refuses it
        cfg2 = micro_config(tmp_path, cache_dir=micro_cache, strategies=grid.replace("0.001", "0.01"))
        with pytest.raises(ConfigError, match="different config"):
            run_grid(cfg2, progress=False, echo=lambda *a: None)
    finally:
        registry._PLUGINS.pop("weight_l2", None)


def test_what_cannot_be_composed_is_refused_before_anything_runs(tmp_path):
    from clbench.run.plan import plan

    def refused(grid: str, match: str):
        with pytest.raises(ConfigError, match=match):
            plan(micro_config(tmp_path, strategies=grid))

    refused("[{name: sft, with: [surprize]}]", r"unknown plugin 'surprize'.*did you mean 'surprise'")
    refused("[{name: sft, with: [{name: surprise, options: {every_n: 0}}]}]", r"with\[0\]\.options\.every_n")
    refused("[{name: sft, with: [{name: surprise, weights: [1]}]}]", r"with\[0\].*name, options")
    refused("[{name: sft, with: [[surprise]]}]", r"with\[0\].*name, options")
    refused("[{name: sft, wiht: [surprise]}]", r"unknown key 'wiht'.*did you mean 'with'")
    refused("[{name: sft, train: {steps_per_tsk: 3}}]", r"strategies\[sft\]\.train.*steps_per_tsk")
    refused("[surprise]", "'surprise' is a plugin, not a strategy")
    assert not list((tmp_path / "results").glob("**/config.json"))
