"""Fictional names from syllables, so that no real pretrained model already knows the facts.

Every name is drawn from a seeded ``random.Random``; a :class:`NamePool` never hands out the same
name twice, so entities of different kinds (countries, cities, drugs, people) cannot collide.
"""

from __future__ import annotations

import random

ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "st", "th", "tr"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]
CODAS = ["", "", "", "n", "r", "l", "s", "th", "m"]


class NamePool:
    """Unique pronounceable names (2-3 syllables), deterministic for a given ``rng``."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()

    def _one(self, syllables: int) -> str:
        parts = [self.rng.choice(ONSETS) + self.rng.choice(VOWELS) for _ in range(syllables)]
        return ("".join(parts) + self.rng.choice(CODAS)).capitalize()

    def take(self, n: int, suffix: str = "", syllables: tuple[int, int] = (2, 3)) -> list[str]:
        """``n`` new names, each ending with ``suffix`` (e.g. ``"ia"`` for countries)."""
        out: list[str] = []
        while len(out) < n:
            name = self._one(self.rng.randint(*syllables)) + suffix
            if name.lower() not in self.used:
                self.used.add(name.lower())
                out.append(name)
        return out
