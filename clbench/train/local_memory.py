"""The training side of a CMS memory that learns by its own δ-rule (``strategies/cms_local.py``).

The memory itself — its levels, the rule's step, the memorising pass — is ``clbench.modeling.cms_memory``;
the test-time view is ``clbench.eval.memory_view``. What this module adds is how the rule rides on the
ordinary training step (``clbench.train.step.optimizer_step``):

1. :meth:`LocalMemory.teach_signal_loss` — each micro-batch's main loss is computed with the memories'
   outputs captured, and a gradient hook on each output keeps its gradient δ = ∇_m L once the step
   backpropagates; the micro-batch and its (not yet filled) teach signals wait in :attr:`pending`.
2. :meth:`LocalMemory.memorize_pending` — at the update, every pending micro-batch is run again with its
   teach signals (``cms_memory.memorize``), the levels stepping at their chunk boundaries inside that pass;
   the outer optimizer is given no gradient. It returns the elements changed and counts each level's
   updates in this step (:attr:`step_updates`, summed over the blocks).

The memory's weights never require a gradient of the main loss: only the rule changes them.
"""

from __future__ import annotations

from collections.abc import Sequence

from clbench.modeling import cms_memory


class LocalMemory:
    """The memories of every block and the micro-batches whose teach signals await the update."""

    def __init__(self, model, memories: Sequence[cms_memory.ContinuumMemory], backend, clock: str):
        self.model, self.memories, self.backend, self.clock = model, list(memories), backend, clock
        self.pending: list[tuple[dict, list]] = []  # (micro-batch, its teach signals) until the update
        self.step_updates = [0] * len(self.memories[0].levels)

    def begin_task(self) -> None:
        """A task clock forgets open chunks and momentum; the statistics restart every task."""
        for m in self.memories:
            if self.clock == "task":
                m.reset_clock()
            m.reset_stats()
        self.step_updates = [0] * len(self.step_updates)

    def teach_signal_loss(self, model, batch):
        """The main loss of ``batch``, with a hook on every memory's output that keeps its gradient (the
        teach signal) when the step backpropagates the loss."""
        with cms_memory.capturing(self.memories):
            loss = self.backend.lm_loss(model, batch)
            outputs = [m.captured[0] for m in self.memories]
        deltas: list = [None] * len(outputs)

        def keep(i):
            def hook(grad):
                deltas[i] = grad.detach()  # this micro-batch's ∇_y L: the step backpropagates each loss as it is
            return hook

        for i, y in enumerate(outputs):
            y.register_hook(keep(i))
        self.pending.append(({"input_ids": batch["input_ids"], "attention_mask": batch.get("attention_mask")},
                             deltas))
        return loss

    def memorize_pending(self, ctx) -> int:
        """The memorising pass of every pending micro-batch; returns the elements the levels changed."""
        before = [list(m.updates) for m in self.memories]
        for batch, deltas in self.pending:
            if any(d is None for d in deltas):
                raise RuntimeError("cms local: a micro-batch's loss was not backpropagated before the update")
            with self.backend.compute():  # the memorising pass in the run's precision, as the training pass
                cms_memory.memorize(self.model, self.memories, batch, deltas)
        self.pending = []
        ctx.apply({})  # no gradient: changes nothing, keeps the optimizer/schedule order valid
        step = ctx.global_step if self.clock == "global" else ctx.step
        for m in self.memories:
            m.end_step(step)
        sizes = [sum(p.numel() for p in level.parameters()) for level in self.memories[0].levels]
        self.step_updates = [sum(m.updates[i] - b[i] for m, b in zip(self.memories, before))
                             for i in range(len(sizes))]
        return sum(n * size for n, size in zip(self.step_updates, sizes))

    def level_diagnostics(self, chunk_sizes: Sequence, unit: str) -> list[dict]:
        """Per level: its chunk, updates per block (all blocks share the clock), gate hits and misses over
        the blocks, the mean surprise and the clock values at which it updated."""
        first = self.memories[0]
        levels = []
        for i, c in enumerate(chunk_sizes):
            surprise = [s for m in self.memories for s in m.surprise[i]]
            levels.append({"level": i, "chunk": c, "unit": unit,
                           "updates": first.updates[i],
                           "gate_hits": sum(m.updates[i] for m in self.memories),
                           "gate_misses": sum(m.gate_misses[i] for m in self.memories),
                           "surprise_mean": sum(surprise) / len(surprise) if surprise else None,
                           "at": first.update_positions[i]})
        return levels

    def state_dict(self) -> dict:
        return {"memory": [m.memory_state() for m in self.memories]}

    def load_state_dict(self, state: dict) -> None:
        """Open chunks and momentum of a resumed run (the global clock only: a task clock restarts)."""
        if state.get("memory") is not None and self.clock == "global":
            for m, st in zip(self.memories, state["memory"], strict=True):
                m.load_memory_state(st)
