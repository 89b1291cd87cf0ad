"""The same training with Avalanche 0.6's own strategies (Naive, EWC, Replay).

Avalanche trains; the evaluation after each experience is the cross-check's own
:func:`clbench.bench.crosscheck.model.accuracy`, shared with the clbench side. Avalanche's deprecation
warnings and its "no loggers" notice are silenced: the cross-check logs nothing through Avalanche.
"""

from __future__ import annotations

import warnings

import torch

from clbench.bench.crosscheck.digits import SplitDigits, avalanche_benchmark
from clbench.bench.crosscheck.loop import LoopConfig
from clbench.bench.crosscheck.model import DigitsMLP, LogitsOnly, accuracy

METHODS = ("naive", "ewc", "replay")


def train_avalanche(method: str, model: DigitsMLP, stream: SplitDigits, cfg: LoopConfig, seed: int,
                    ewc_lambda: float, mem_size: int) -> list[list[float]]:
    """Train with Avalanche's ``method``; return the accuracy matrix R on ``stream``'s experiences."""
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.supervised import EWC, Naive, Replay

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.showwarning = lambda *a, **k: None  # Avalanche's @deprecated resets the filters itself
        bench = avalanche_benchmark(stream)
        torch.manual_seed(seed)  # Avalanche's data loaders shuffle with the global generator
        net = LogitsOnly(model)
        common = {"model": net, "optimizer": torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum),
                  "criterion": torch.nn.CrossEntropyLoss(), "train_mb_size": cfg.batch_size,
                  "train_epochs": cfg.epochs, "device": "cpu", "evaluator": EvaluationPlugin(loggers=[])}
        if method == "naive":
            strategy = Naive(**common)
        elif method == "ewc":
            strategy = EWC(ewc_lambda=ewc_lambda, **common)
        elif method == "replay":
            strategy = Replay(mem_size=mem_size, **common)
        else:
            raise ValueError(f"unknown Avalanche method {method!r} (known: {', '.join(METHODS)})")
        R = []
        for exp in bench.train_stream:
            strategy.train(exp)
            R.append([accuracy(model, e.test_x, e.test_y) for e in stream.experiences])
    return R
