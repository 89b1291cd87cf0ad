"""Seeds of a run: every generator seeded from the run's seed, and each task re-seeded from
``(seed, task index)``, so a resumed run draws exactly what an uninterrupted one draws."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def task_seed(seed: int, t: int) -> int:
    return int(hashlib.sha256(f"{seed}:{t}".encode()).hexdigest()[:8], 16)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
