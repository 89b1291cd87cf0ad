"""Split digits: scikit-learn's bundled digits as 5 experiences of 2 classes (class-incremental).

One fixed stratified train/test split (``split_seed``); experience k holds classes 2k and 2k+1. The
clbench side gets training records ``{"id", "x", "y"}`` (``x``: 64 floats in [0, 1]); the Avalanche
side gets the same samples through Avalanche's own ``class_incremental_benchmark`` with the class
order fixed, so the split into experiences is Avalanche's, not a copy of ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Experience:
    index: int
    classes: tuple[int, ...]
    train: tuple[dict, ...]  # {"id": int, "x": float tensor (64,), "y": int}
    test_x: torch.Tensor
    test_y: torch.Tensor

    @property
    def name(self) -> str:
        return "digits_" + "".join(map(str, self.classes))


@dataclass(frozen=True)
class SplitDigits:
    experiences: tuple[Experience, ...]
    train_x: torch.Tensor  # the whole training split, in id order
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_order: tuple[int, ...]


def load_split_digits(n_experiences: int = 5, test_size: float = 0.3, split_seed: int = 0) -> SplitDigits:
    """The stream: classes in order 0..9, ``10 / n_experiences`` classes per experience."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, random_state=split_seed, stratify=y)
    if 10 % n_experiences:
        raise ValueError(f"10 classes do not split into {n_experiences} equal experiences")
    per = 10 // n_experiences
    train_x, train_y = torch.from_numpy(x_tr), torch.from_numpy(y_tr).long()
    test_x, test_y = torch.from_numpy(x_te), torch.from_numpy(y_te).long()
    exps = []
    for k in range(n_experiences):
        classes = tuple(range(k * per, (k + 1) * per))
        tr = torch.isin(train_y, torch.tensor(classes)).nonzero().flatten().tolist()
        te = torch.isin(test_y, torch.tensor(classes))
        records = tuple({"id": i, "x": train_x[i], "y": int(train_y[i])} for i in tr)
        exps.append(Experience(k, classes, records, test_x[te], test_y[te]))
    return SplitDigits(tuple(exps), train_x, train_y, test_x, test_y, tuple(range(10)))


class _Labelled(torch.utils.data.TensorDataset):
    """A tensor dataset with the ``targets`` list Avalanche's dataset wrappers need."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        super().__init__(x, y)
        self.targets = y.tolist()


def avalanche_benchmark(stream: SplitDigits):
    """The same split as an Avalanche class-incremental benchmark (Avalanche does the class split)."""
    from avalanche.benchmarks.scenarios.supervised import class_incremental_benchmark
    from avalanche.benchmarks.utils import as_classification_dataset

    return class_incremental_benchmark(
        {"train": as_classification_dataset(_Labelled(stream.train_x, stream.train_y)),
         "test": as_classification_dataset(_Labelled(stream.test_x, stream.test_y))},
        class_order=list(stream.class_order), num_experiences=len(stream.experiences))
