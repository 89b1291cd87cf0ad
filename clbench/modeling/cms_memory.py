"""The Continuum Memory System as a memory: a chain of MLP levels beside each block's feed-forward.

Seed 004, eq. 70, and kmccleary3301/nested_learning (``cms.py``, ``hope/block.py``): each level is a
residual block ``x + MLP_l(LN(x))``, and the levels run fast → slow, level 0 innermost. Here the chain
sits *beside* every transformer block's feed-forward network, reading the FFN's input ``u``::

    FFN'(u) = FFN(u) + m(u),   m(u) = chain(u) − u,   chain = level_{L−1} ∘ … ∘ level_0

Every level's output projection starts at zero, so ``m = 0`` and the pretrained model computes exactly
what it computed before (bit for bit) until a level's first update; the pretrained weights are frozen
(``add_memory``). The layer norm has no affine parameters: a level's weights are its two linear layers.

How a level learns is the strategy's choice:

* ``outer`` (``cms`` with ``form: memory``, ``strategies/cms.py``) — its weights are ordinary trainable
  parameters, updated from the main loss's gradients accumulated over a chunk
  (``clbench.train.tiers.updater``, eq. 71);
* ``local`` (``cms_local``, ``strategies/cms_local.py``; the training side ``clbench.train.local_memory``)
  — the inner δ-rule. A *teach signal* ``δ = ∇_m L`` (the main loss's gradient at the memory's
  output, per token, from an ordinary forward/backward pass) is handed to every memory, and the model is
  run forward once more (:func:`memorize`). In that pass each memory walks along the sequence: level l
  buffers its inputs ``x`` and the teach signal of a chunk of ``C_l`` tokens, and at the chunk's boundary
  takes one step on ``½‖MLP_l(x) − stopgrad(y − δ)‖²`` summed over the chunk's tokens (``y`` = the
  level's own output). Tokens after the boundary — later positions of the same sequence — are computed
  with the updated weights. A chunk longer than the sequence continues into the next pass; since the
  weights are constant inside a chunk, its gradient is summed as its tokens arrive instead of
  buffering the tokens (the same number). At unchanged weights ``y = MLP_l(x)``, so the gradient is
  ``δᵀ ∂MLP_l/∂W``: the main loss's gradient with respect to the level through its output, taken with
  the memory's own learning rate and applied in the middle of the forward pass. As in the
  reimplementation, every level of a block's chain receives the same δ (the gradient at the chain's
  output), the teach signal comes from the pass before the memorising one, and the batch's rows are
  processed in parallel: a "token" is a sequence position, counted once per pass (padding included;
  padded positions have δ = 0 and move nothing).

The step a level takes (:class:`LocalRule`) is Titans' surprise-driven update (Behrouz et al., 2025):
the chunk gradient ``g`` is the level's *momentary surprise* — the gradient of its associative-memory
loss with respect to its own weights — and::

    S ← η·S − θ·g          (momentum: past surprise)
    W ← (1 − α)·W + S      (decay: the forgetting gate)

with ``η = momentum``, ``θ = lr``, ``α = decay``; η = α = 0 is plain gradient descent on the δ-rule. With
``threshold > 0`` a chunk whose surprise ‖g‖ (Frobenius norm over the level's weights) is below the
threshold changes nothing (a *gate miss*; momentum and weights stay as they were); the counts of hits
and misses are kept per level.

Without a teach signal (evaluation, or ``outer``), a memory is a plain function of its weights and
changes nothing. Test-time learning (``clbench.eval.memory_view.TestTimeMemoryView``) memorises each
probe batch's prompts — never the continuations being scored — then answers with the memory frozen, and
restores every memory afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from clbench.config.periods import NEVER
from clbench.modeling.blocks import decoder_blocks
from clbench.modeling.cms_adapter import feed_forward_name


@dataclass(frozen=True)
class LocalRule:
    """How a level learns from its teach signal (module docstring): chunk sizes fast → slow, counted in
    ``unit`` (``tokens``: sequence positions inside the forward pass; ``steps``: optimizer steps, the
    chunk closing at the end of the step's memorising pass), and Titans' step."""

    chunk_sizes: tuple[int | str, ...]  # "never": the level never changes (its δ-rule gradient is not computed)
    unit: Literal["tokens", "steps"] = "tokens"
    lr: float = 1.0
    momentum: float = 0.0
    decay: float = 0.0
    threshold: float = 0.0


class MemoryLevel(nn.Module):
    """One level: ``x + W_down σ(W_up LN(x))``, the identity until ``W_down`` leaves zero."""

    def __init__(self, width: int, hidden: int, dtype=None, device=None):
        super().__init__()
        self.up = nn.Linear(width, hidden, dtype=dtype, device=device)
        self.down = nn.Linear(hidden, width, dtype=dtype, device=device)
        nn.init.zeros_(self.down.weight)
        nn.init.zeros_(self.down.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(F.silu(self.up(F.layer_norm(x, x.shape[-1:]))))


class ContinuumMemory(nn.Module):
    """A block's chain of levels and, under a :class:`LocalRule`, its online-learning state."""

    def __init__(self, width: int, hidden: int, n_levels: int, dtype=None, device=None):
        super().__init__()
        if n_levels < 1 or hidden < 1:
            raise ValueError(f"need at least one level and a positive hidden width, got {n_levels}, {hidden}")
        self.levels = nn.ModuleList(MemoryLevel(width, hidden, dtype, device) for _ in range(n_levels))
        self.rule: LocalRule | None = None
        self.teach: torch.Tensor | None = None  # δ of the pass being memorised (B, T, width)
        self.captured: list[torch.Tensor] | None = None  # outputs of a pass whose δ is wanted
        self.reset_clock()
        self.reset_stats()

    # --- state -----------------------------------------------------------------------------------
    def reset_clock(self) -> None:
        """Forget partial chunks and momentum (a task clock does this at every task)."""
        n = len(self.levels)
        self.chunk_fill = [0] * n  # tokens (or steps) in each level's open chunk
        self.grad_sum: list[list[torch.Tensor] | None] = [None] * n
        self.velocity: list[list[torch.Tensor] | None] = [None] * n
        self.tokens_seen = 0

    def reset_stats(self) -> None:
        n = len(self.levels)
        self.updates = [0] * n  # gate hits: chunks that changed the level
        self.gate_misses = [0] * n
        self.surprise: list[list[float]] = [[] for _ in range(n)]
        self.update_positions: list[list[int]] = [[] for _ in range(n)]  # clock value at each update

    def memory_state(self) -> dict:
        """Clock, open chunks and momentum (``torch.save``-able) — what a resume needs besides weights."""
        def cpu(ts):
            return None if ts is None else [t.detach().to("cpu", copy=True) for t in ts]
        return {"chunk_fill": list(self.chunk_fill), "tokens_seen": self.tokens_seen,
                "grad_sum": [cpu(g) for g in self.grad_sum], "velocity": [cpu(v) for v in self.velocity]}

    def load_memory_state(self, state: dict) -> None:
        ref = next(self.parameters())

        def dev(ts):
            return None if ts is None else [t.to(ref.device, ref.dtype).clone() for t in ts]
        self.chunk_fill = list(state["chunk_fill"])
        self.tokens_seen = int(state["tokens_seen"])
        self.grad_sum = [dev(g) for g in state["grad_sum"]]
        self.velocity = [dev(v) for v in state["velocity"]]

    # --- forward ---------------------------------------------------------------------------------
    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if self.teach is not None:
            return self._memorise(u)
        z = u
        for level in self.levels:
            z = level(z)
        m = z - u
        if self.captured is not None and torch.is_grad_enabled():
            if not m.requires_grad:
                m.requires_grad_()  # frozen below: a leaf whose gradient is the teach signal
            self.captured.append(m)
        return m

    def _memorise(self, u: torch.Tensor) -> torch.Tensor:
        """The forward pass of the local rule: levels step at chunk boundaries between positions."""
        rule, delta = self.rule, self.teach
        if delta.shape != u.shape:
            raise RuntimeError(f"teach signal of shape {tuple(delta.shape)} for a memory input of {tuple(u.shape)}")
        by_tokens = rule.unit == "tokens"
        learning = [c != NEVER for c in rule.chunk_sizes]
        outs, start, length = [], 0, u.shape[1]
        params = [list(level.parameters()) for level in self.levels]
        flags = [p.requires_grad for ps in params for p in ps]
        for ps in params:
            for p in ps:
                p.requires_grad_(True)
        try:
            while start < length:
                end = length
                if by_tokens and any(learning):
                    end = min(end, start + min(c - f for c, f, on in zip(rule.chunk_sizes, self.chunk_fill, learning)
                                               if on))
                z = u[:, start:end]
                d = delta[:, start:end]
                for i, level in enumerate(self.levels):
                    if not learning[i]:
                        z = level(z.detach()).detach()
                        continue
                    with torch.enable_grad():
                        y = level(z.detach())
                        # ∂/∂W of ½‖y − sg(y − δ)‖², summed over the chunk's tokens, is δᵀ ∂y/∂W
                        grads = torch.autograd.grad(y, params[i], grad_outputs=d)
                    self._add_grad(i, grads)
                    z = y.detach()
                outs.append(z - u[:, start:end])
                self.tokens_seen += end - start
                if by_tokens:
                    for i, c in enumerate(rule.chunk_sizes):
                        if not learning[i]:
                            continue
                        self.chunk_fill[i] += end - start
                        if self.chunk_fill[i] == c:
                            self._close_chunk(i, self.tokens_seen)
                start = end
        finally:
            for p, flag in zip((p for ps in params for p in ps), flags):
                p.requires_grad_(flag)
        return torch.cat(outs, dim=1)

    def end_step(self, step: int) -> None:
        """``unit: steps``: close the chunks of the levels whose chunk size divides ``step``."""
        if self.rule is None or self.rule.unit != "steps":
            return
        for i, c in enumerate(self.rule.chunk_sizes):
            if c == NEVER:
                continue
            self.chunk_fill[i] += 1
            if self.chunk_fill[i] == c:
                self._close_chunk(i, step)

    def _add_grad(self, i: int, grads: Sequence[torch.Tensor]) -> None:
        if self.grad_sum[i] is None:
            self.grad_sum[i] = [g.clone() for g in grads]
        else:
            for acc, g in zip(self.grad_sum[i], grads):
                acc.add_(g)

    @torch.no_grad()
    def _close_chunk(self, i: int, position: int) -> None:
        """Titans' step for level ``i`` from its chunk's summed gradient (module docstring)."""
        rule, grads = self.rule, self.grad_sum[i]
        self.chunk_fill[i], self.grad_sum[i] = 0, None
        if grads is None:
            return
        surprise = math.sqrt(sum(float(g.float().pow(2).sum()) for g in grads))
        self.surprise[i].append(surprise)
        if rule.threshold and surprise < rule.threshold:
            self.gate_misses[i] += 1
            return
        params = list(self.levels[i].parameters())
        velocity = self.velocity[i]
        if velocity is None:
            velocity = [torch.zeros_like(p) for p in params]
        for p, v, g in zip(params, velocity, grads):
            v.mul_(rule.momentum).add_(g, alpha=-rule.lr)
            if rule.decay:
                p.mul_(1.0 - rule.decay)
            p.add_(v)
        self.velocity[i] = velocity if rule.momentum else None
        self.updates[i] += 1
        self.update_positions[i].append(position)


class MemoryBesideFeedForward(nn.Module):
    """A block's feed-forward network with a :class:`ContinuumMemory` beside it: ``FFN(u) + m(u)``."""

    def __init__(self, ffn: nn.Module, memory: ContinuumMemory):
        super().__init__()
        self.ffn = ffn
        self.memory = memory

    def forward(self, x, *args, **kwargs):
        return self.ffn(x, *args, **kwargs) + self.memory(x)


def add_memory(model: nn.Module, n_levels: int, hidden: int) -> list[ContinuumMemory]:
    """Freeze ``model`` and put an ``n_levels`` memory (MLP width ``hidden``) beside every block's FFN
    (frozen too: an outer rule switches its gradients on)."""
    width = getattr(getattr(model, "config", None), "hidden_size", None)
    if width is None:
        raise ValueError(f"{type(model).__name__} has no config.hidden_size: cannot size the CMS memory")
    for p in model.parameters():
        p.requires_grad_(False)
    out = []
    for i, block in enumerate(decoder_blocks(model)):
        attr = feed_forward_name(block, i, nn.Module)
        ffn = getattr(block, attr)
        ref = next(ffn.parameters())
        memory = ContinuumMemory(width, hidden, n_levels, dtype=ref.dtype, device=ref.device)
        memory.requires_grad_(False)  # the strategy says which rule trains it
        setattr(block, attr, MemoryBesideFeedForward(ffn, memory))
        out.append(memory)
    return out


def memory_levels(model: nn.Module) -> dict[str, int]:
    """``{parameter name: level}`` for every memory parameter of ``model``."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, ContinuumMemory):
            for i, level in enumerate(module.levels):
                for pname, _ in level.named_parameters():
                    out[f"{name}.levels.{i}.{pname}"] = i
    return out


def find_memories(model: nn.Module) -> list[ContinuumMemory]:
    return [m for m in model.modules() if isinstance(m, ContinuumMemory)]


# --- the two passes of the local rule -------------------------------------------------------------
@contextmanager
def capturing(memories: Sequence[ContinuumMemory]):
    """Inside, every memory keeps its outputs of passes with gradients (``memory.captured``)."""
    for m in memories:
        m.captured = []
    try:
        yield
    finally:
        for m in memories:
            m.captured = None


@torch.no_grad()
def memorize(model: nn.Module, memories: Sequence[ContinuumMemory], batch: dict, deltas: Sequence[torch.Tensor]):
    """Run ``model`` on ``batch`` with each memory learning from its teach signal (``deltas``, one per
    memory, shaped like its output) as the pass goes along the sequence."""
    for m, d in zip(memories, deltas, strict=True):
        m.teach = d
    try:
        model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"))
    finally:
        for m in memories:
            m.teach = None


def lm_teach_signals(model: nn.Module, memories: Sequence[ContinuumMemory], ids: torch.Tensor,
                     mask: torch.Tensor) -> list[torch.Tensor]:
    """``∇_m L`` at every memory for the next-token loss of ``ids`` (padding excluded): the teach signal
    of a text with no separate training label (test-time learning)."""
    labels = ids.masked_fill(mask == 0, -100)
    with torch.enable_grad(), capturing(memories):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        outputs = [m.captured[0] for m in memories]
        if any(len(m.captured) != 1 for m in memories):
            raise RuntimeError("a memory ran more than once in one forward pass")
        return [d.detach() for d in torch.autograd.grad(loss, outputs)]

