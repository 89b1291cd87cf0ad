"""``clbench new strategy NAME``: a new strategy's file and its test, ready to run and to edit.

``strategies/NAME.py`` is LoRA fine-tuning (``sft``) with an options dataclass and the hooks an
algorithm usually changes, each written out doing what plain fine-tuning does, plus one option that
adds a penalty to the loss so the file shows where a method's own term goes. ``tests/test_strategy_NAME.py``
runs it on the smoke preset (``clbench.config.presets``) for a few steps and checks the run finished,
changed parameters and logged a finite loss. In an editable install (``make install``) the new file is
a module of ``clbench.strategies`` at once: ``clbench list`` and ``--strategies NAME`` find it.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

from clbench.errors import ConfigError

STRATEGY = '''"""{name}: LoRA fine-tuning plus a penalty on the adapter weights — edit this into your method.

Written by ``clbench new strategy {name}``. The class below is plain ``sft`` (LoRA on every linear
layer) with the hooks an algorithm usually changes written out; each does what sft does unless the
option says otherwise. Keep the hooks your method changes, delete the others. When they are called:
``clbench/train/strategy.py``; where in training: ``clbench/train/loop.py`` (a task's steps) and
``clbench/train/step.py`` (one step). Array work goes through ``self.backend`` (torch or MLX).

Try it next to sft:  clbench run --smoke --strategies sft,{name}
Its test:            python -m pytest -q tests/test_strategy_{name}.py
"""

from __future__ import annotations

from dataclasses import dataclass

from clbench.config.options import opt
from clbench.modeling.lora import LoraOptions
from clbench.strategies.sft import SFT
from clbench.train.registry import register
from clbench.train.strategy import LossOutput


@register("{name}")
class {cls}(SFT):
    """{name}: LoRA fine-tuning plus penalty · Σ‖adapter‖² (the first line shows in `clbench list`)."""

    family = "other"  # how reports group it: "nested learning", "baselines" or "references"

    @dataclass(frozen=True)
    class Options(LoraOptions):  # LoRA's group (lora: {{rank, alpha, ...}}); plus this method's own
        penalty: float = opt(0.0, "weight of the squared norm of the trainable weights in the loss (0 = sft)", ge=0)

    def before_task(self, task, model):
        """Before the first step of each trained task: snapshot what the method keeps (anchors, buffers)."""

    def loss(self, model, batch):
        """One micro-batch's loss: the language-model loss, plus the method's own term."""
        lm = self.backend.lm_loss(model, batch)
        if not self.options.penalty:
            return LossOutput(lm)
        norm = sum((p * p).sum() for p in self.params(model).values())
        return LossOutput(lm + self.options.penalty * norm, {{"norm": norm}})  # logged in train_log.jsonl

    def after_task(self, task, model):
        """After the last step of each trained task, before evaluation: consolidate, compute importances."""

    def diagnostics(self):
        """Numbers stored with each task's results (``eval/after_<t>.json``)."""
        return {{}}
'''

TEST = '''"""{name} runs on the smoke preset: the run finishes, its parameters change, its loss stays finite.

Written by ``clbench new strategy {name}``; add tests of what your method does differently from sft.
"""

import json
import math

from clbench.config.presets import smoke_config
from clbench.run.grid import run_grid


def test_{name}_trains_on_the_smoke_preset(tmp_path):
    cfg = smoke_config(tmp_path / "results", ["{{name: {name}, options: {{penalty: 0.001}}}}"], steps_per_task=4)
    ((run, status),) = run_grid(cfg, progress=False, echo=lambda *a: None)
    assert status == "done" and (run / "DONE").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["cost"]["optimizer_steps"] == 2 * 4  # two trained tasks of the micro stream, 4 steps each
    assert metrics["cost"]["updated_elements"] > 0
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 8 and all(math.isfinite(r["loss"]) and r["norm"] > 0 for r in log)
'''

NAME = re.compile(r"[a-z][a-z0-9_]*")


def class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_") if part) or "Strategy"


def write_strategy(name: str, root: Path) -> list[Path]:
    """Write ``strategies/<name>.py`` and ``tests/test_strategy_<name>.py`` under ``root`` (a clbench
    checkout); returns both paths. Refuses a bad or taken name and never overwrites a file."""
    from clbench.train import registry

    if not NAME.fullmatch(name) or keyword.iskeyword(name):
        raise ConfigError("name", f"{name!r} is not a strategy name: lower case letters, digits and underscores, "
                          "starting with a letter (it is the module's name too)")
    if name in registry.names() or name in registry.plugin_names():
        raise ConfigError("name", f"{name!r} is already registered (clbench list)")
    folder, tests = Path(root) / "strategies", Path(root) / "tests"
    if not (folder / "__init__.py").is_file():
        raise ConfigError(str(root), "no strategies/ package here: run `clbench new` in the clbench checkout "
                          "(or give --root)")
    targets = [folder / f"{name}.py", tests / f"test_strategy_{name}.py"]
    taken = [str(p) for p in targets if p.exists()]
    if taken:
        raise ConfigError(taken[0], "exists already; pick another name or remove the file")
    tests.mkdir(exist_ok=True)
    for path, template in zip(targets, (STRATEGY, TEST)):
        path.write_text(template.format(name=name, cls=class_name(name)))
    return targets
