"""Joint training: each task trains on the union of every task seen so far (the usual upper reference).

The strategy keeps its own copy of each finished task's training records (a strategy only ever sees
the current task's data) and, with ``include_pretrained`` (default on), the records of the tasks the
base model learned in pretraining. Every task still gets the runner's ``steps_per_task`` steps, so
joint is compute-matched: the union is sampled more thinly as it grows, which makes it an upper
reference for retention, not necessarily for how well the newest task is learned.
"""

from __future__ import annotations

from dataclasses import dataclass

from clbench.config.options import opt
from clbench.modeling.lora import LoraOptions
from clbench.strategies.sft import SFT
from clbench.train.registry import register
from clbench.train.strategy import TaskView


@dataclass(frozen=True)
class JointOptions(LoraOptions):
    include_pretrained: bool = opt(True, "the union includes the tasks the base model learned (pretraining data)")


@register("joint")
class Joint(SFT):  # SFT's LoRA-or-full set-up; this adds the method
    """Joint (cumulative) training on the union of all tasks so far: the upper reference."""

    family = "references"

    Options = JointOptions

    def __init__(self, options=None, **kw):
        super().__init__(options, **kw)
        self.memory: dict[str, list[dict]] = {}  # task name -> its training records, in stream order
        self._pretrained_seen: list[TaskView] = []

    def observe_pretrained(self, task):
        if self.options.include_pretrained:
            self._pretrained_seen.append(task)
            self.memory[task.name] = list(task.examples)

    def training_examples(self, task):
        return [r for records in self.memory.values() for r in records] + list(task.examples)

    def after_task(self, task, model):
        self.memory[task.name] = list(task.examples)

    def state_dict(self):
        return {"memory": [[name, records] for name, records in self.memory.items()]}

    def load_state_dict(self, state):
        self.memory = {name: list(records) for name, records in state["memory"]}
        for view in self._pretrained_seen:  # pretrained tasks that come after the checkpointed task
            self.memory.setdefault(view.name, list(view.examples))

    def diagnostics(self):
        return {"union_records": {name: len(r) for name, r in self.memory.items()}}
