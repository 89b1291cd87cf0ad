"""Experience replay: rehearse a bounded memory of earlier tasks' training records.

After each trained task its training records go into a buffer (``balanced``: an equal share per task,
Avalanche's default; ``reservoir``: reservoir sampling over all records). Training on a new task uses
the task's own records plus ``ratio × len(task records)`` records drawn from the buffer, mixed into one
training set that the trainer shuffles into its batches. So ``ratio`` is *replayed records per
current-task record*: ``0.5`` makes a third of the examples replay, ``1.0`` half (Avalanche's
``ReplayPlugin`` pairs every mini-batch with a memory mini-batch of the same size, i.e. ratio 1.0).
With a fixed number of steps per task (the clbench runner), replay takes its share of each batch
from the current task; it does not add compute.

With ``replay_pretrained`` (default on) the records of tasks the base model learned in pretraining
(the stream's ``general`` task) enter the buffer too, as rehearsing pretraining data is common practice
for language models and the only way replay can protect what the model knew before the stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from clbench.config.options import opt
from clbench.modeling.lora import LoraOptions
from clbench.strategies.sft import SFT
from clbench.train.registry import register
from clbench.train.replay_buffer import draw, make_buffer
from clbench.train.strategy import TaskView


@dataclass(frozen=True)
class ReplayOptions(LoraOptions):
    buffer_size: int = opt(200, "records the memory holds, over all earlier tasks", ge=0)
    policy: Literal["balanced", "reservoir"] = opt("balanced", "balanced (equal share per task) or reservoir")
    ratio: float = opt(0.5, "replayed records per current-task record in the training set", ge=0)
    replay_pretrained: bool = opt(True, "also store the records of tasks the base model learned (pretraining data)")


@register("replay")
class Replay(SFT):  # SFT's LoRA-or-full set-up; this adds the method
    """Experience replay: earlier tasks' records from a bounded buffer mixed into each task's training set."""

    Options = ReplayOptions

    def __init__(self, options=None, **kw):
        super().__init__(options, **kw)
        self.buffer = make_buffer(self.options.policy, self.options.buffer_size, self.seed)
        self._pretrained_seen: list[TaskView] = []  # re-added after a resume if the state predates them
        self._replayed = 0

    def observe_pretrained(self, task):
        if self.options.replay_pretrained:
            self._pretrained_seen.append(task)
            self.buffer.add(task.name, task.examples)

    def training_examples(self, task):
        current = list(task.examples)
        replayed = draw(self.buffer.records(), round(self.options.ratio * len(current)),
                        seed=f"replay:{self.seed}:{task.index}")
        self._replayed = len(replayed)
        return current + replayed

    def after_task(self, task, model):
        self.buffer.add(task.name, task.examples)

    def state_dict(self):
        return {"buffer": self.buffer.state_dict()}

    def load_state_dict(self, state):
        self.buffer.load_state_dict(state["buffer"])
        for view in self._pretrained_seen:  # pretrained tasks that come after the checkpointed task
            if view.name not in self.buffer.tasks:
                self.buffer.add(view.name, view.examples)

    def diagnostics(self):
        return {"buffer": self.buffer.counts(), "replayed_records": self._replayed}
