"""The tier schedule, as pure functions of step numbers and parameter names (no torch, no MLX).

Nested-learning strategies split parameters into tiers that update at different frequencies. Steps
count from 1 (the seed's table): tier i is active at step s iff ``s % f_i == 0``, so with frequencies
[1, 2, 4] step 1 updates tier 0, step 2 tiers 0-1, step 4 all three, and 20 steps give [20, 10, 5].
A period may also be ``"never"`` (``clbench.config.periods.NEVER``): the tier is never active — the limit
of a period longer than any stream, i.e. frozen (the timescale sweep's P = ∞, ``clbench.bench.timescales``).

Tier maps are ``{parameter name: tier}``. A parameter whose name shows no layer index cannot be placed
by depth; it goes to the *slowest* tier with a warning naming it (seed 002, fix 3: the earlier default,
the fastest tier, silently made unexpected parameters update most often).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from clbench.config.periods import NEVER, Period
from clbench.errors import ConfigError

LAYER_PATTERN = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)(?:\.|$)")
# peft names a LoRA tensor ``<module>.lora_A.<adapter>.weight``; mlx-lm ``<module>.lora_a``
LORA_PART = re.compile(r"\.lora_(?:(?:A|B|embedding_A|embedding_B|magnitude_vector)\..*|[ab])$")


def is_period(f) -> bool:
    """A positive int, or :data:`NEVER`."""
    return f == NEVER or (isinstance(f, int) and not isinstance(f, bool) and f >= 1)


def check_frequencies(frequencies: Sequence[Period]) -> list[Period]:
    """``frequencies`` as a list of positive ints (or ``"never"``); anything else raises ``ValueError``
    naming the value."""
    freqs = list(frequencies)
    if not freqs or not all(is_period(f) for f in freqs):
        raise ValueError(f"tier frequencies must be a non-empty list of positive integers (or {NEVER!r}), "
                         f"got {freqs!r}")
    return freqs


def active_tiers(step: int, frequencies: Sequence[Period]) -> list[int]:
    """Tiers that update at optimizer step ``step`` (1-based)."""
    if step < 1:
        raise ValueError(f"steps count from 1, got {step}")
    return [i for i, f in enumerate(frequencies) if f != NEVER and step % f == 0]


def never_tiers(frequencies: Sequence[Period]) -> list[int]:
    """The tiers whose period is :data:`NEVER`."""
    return [i for i, f in enumerate(frequencies) if f == NEVER]


def update_counts(steps: int, frequencies: Sequence[Period]) -> list[int]:
    """How many times each tier updates in steps 1..``steps``."""
    return [0 if f == NEVER else steps // f for f in frequencies]


def layer_of(name: str) -> int | None:
    """The transformer-block index in a parameter name (``...layers.3.mlp...`` → 3), if any."""
    m = LAYER_PATTERN.search(name)
    return int(m.group(1)) if m else None


def adapter_unit(name: str) -> str:
    """The module a parameter belongs to as one adapter: LoRA's ``...q_proj.lora_A.default.weight`` and
    ``...q_proj.lora_B.default.weight`` (mlx-lm: ``...q_proj.lora_a`` / ``.lora_b``) are both ``...q_proj``
    (their product is one weight change); any other name is its own unit."""
    return LORA_PART.sub("", name)


def split_evenly(n_items: int, n_tiers: int) -> list[int]:
    """Tier of each of ``n_items`` ordered items, in contiguous near-equal groups (earlier → lower tier)."""
    if n_tiers < 1:
        raise ValueError("need at least one tier")
    return [min(n_tiers - 1, i * n_tiers // max(1, n_items)) for i in range(n_items)]


def tiers_by_depth(names: Iterable[str], n_tiers: int,
                   order: Literal["shallow_fast", "deep_fast"] = "shallow_fast") -> dict[str, int]:
    """Assign parameters to tiers by their block index.

    ``shallow_fast``: the first blocks form tier 0 (updated most often), as the seed recommends;
    ``deep_fast``: the last blocks form tier 0. Unmapped names go to the slowest tier, with a warning.
    """
    names = list(names)
    layers = sorted({layer_of(n) for n in names} - {None})
    if order not in ("shallow_fast", "deep_fast"):
        raise ValueError(f"order must be shallow_fast or deep_fast, got {order!r}")
    ranked = layers if order == "shallow_fast" else layers[::-1]
    tier_of_layer = dict(zip(ranked, split_evenly(len(ranked), n_tiers)))
    out, unmapped = {}, []
    for n in names:
        layer = layer_of(n)
        if layer is None:
            unmapped.append(n)
            out[n] = n_tiers - 1
        else:
            out[n] = tier_of_layer[layer]
    if unmapped:
        warnings.warn(f"{len(unmapped)} parameter(s) have no layer index and go to the slowest tier "
                      f"{n_tiers - 1}: {', '.join(unmapped[:8])}{' ...' if len(unmapped) > 8 else ''}", stacklevel=2)
    return out


def tiers_by_score(scores: Mapping[str, float], n_tiers: int) -> dict[str, int]:
    """Rank parameters by score (e.g. mean |gradient|), largest first, into near-equal tiers: the
    largest scores form tier 0 (the fastest). Ties break by name, so the map is deterministic."""
    ranked = sorted(scores, key=lambda n: (-scores[n], n))
    return dict(zip(ranked, split_evenly(len(ranked), n_tiers)))


def tier_members(tier_map: Mapping[str, int], n_tiers: int) -> list[list[str]]:
    """Parameter names of each tier."""
    out: list[list[str]] = [[] for _ in range(n_tiers)]
    for name, tier in tier_map.items():
        out[tier].append(name)
    return out


def check_chunks_complete(chunk_sizes: Sequence[Period], unit: Literal["steps", "tokens"], clock: str, plan,
                          where: str) -> None:
    """Refuse a CMS level whose chunk cannot complete: more steps (or tokens) than the stream — or, on the
    task clock, a task — has. Tokens are bounded by ``plan.max_length`` positions per forward pass. The one
    check of ``cms`` and ``cms_local`` (``Strategy.check_plan``); ``where`` names the row."""
    steps = plan.total_steps if clock == "global" else plan.steps_per_task
    horizon = steps if unit == "steps" else steps * plan.grad_accum * plan.max_length
    span = "the stream" if clock == "global" else "a task (clock: task)"
    what = "steps" if unit == "steps" else f"tokens (at most {plan.max_length} per forward pass)"
    for level, c in enumerate(chunk_sizes):
        if c != NEVER and c > horizon:
            raise ConfigError(f"{where}.options.chunk_sizes[{level}]",
                              f"a chunk of {c} {unit} never completes: {span} has at most "
                              f"{horizon} {what}, so level {level} would never update")
