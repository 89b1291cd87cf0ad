"""No training at all: the base model evaluated after every task (the lower reference).

Its rows show what the stream's probes score without learning anything, so the room between frozen
and joint — and any strategy's intransigence — is visible in every table.
"""

from __future__ import annotations

from clbench.train.registry import register
from clbench.train.strategy import Strategy


@register("frozen")
class Frozen(Strategy):
    """No training: the base model itself, the lower reference."""

    family = "references"

    trains = False
    requires_trainable = False
    scores_as_base = True  # every row after a task is the base row, copied (clbench/run/one_run.py)

    def prepare_model(self, model):
        return self.backend.freeze(model)
