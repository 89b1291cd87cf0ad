"""Both sides over seeds, the comparison table and the tolerance it is held to.

Pairs (Avalanche ↔ clbench), everything else identical:

* ``Naive`` ↔ ``sft`` (``mode: full``);
* ``EWC(ewc_lambda=λ)`` ↔ ``ewc`` (``mode: full``, ``lam: 2λ``, Fisher over the last epoch's batches,
  ``fisher: batch``) — Avalanche's penalty is ``λ Σ F (θ−θ*)²``, clbench's ``λ/2 Σ F (θ−θ*)²``, and
  Avalanche's importances are the squared batch-mean gradients, clbench's ``fisher: batch`` estimator
  (clbench's default, the per-sample Fisher, is also within the tolerance here: 0.207 vs 0.200);
* ``Replay(mem_size=M)`` ↔ ``replay`` (``mode: full``, ``buffer_size: M``, ``policy: balanced``,
  ``ratio: 1.0``) — Avalanche's default storage policy is the experience-balanced buffer, and its replay
  loader adds one memory record per current record.

The tolerance: the mean over seeds of the final average accuracy may differ by at most
``tolerance`` (0.05) between the two sides, for every pair.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field

import torch

from clbench.backends.torch_backend import TorchBackend
from clbench.bench.crosscheck.avalanche_side import train_avalanche
from clbench.bench.crosscheck.digits import SplitDigits, load_split_digits
from clbench.bench.crosscheck.loop import LoopConfig, train_clbench
from clbench.bench.crosscheck.model import DigitsMLP
from clbench.config.experiment import TrainConfig
from clbench.results.metrics import average_accuracy, backward_transfer
from clbench.train import registry


@dataclass(frozen=True)
class CrossCheckConfig:
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.9
    hidden: int = 128
    mem_size: int = 200
    ewc_lambda: float = 100.0  # Avalanche's λ; clbench's ewc gets 2λ (its penalty carries 1/2)
    tolerance: float = 0.05
    methods: tuple[str, ...] = ("naive", "ewc", "replay")

    @property
    def loop(self) -> LoopConfig:
        return LoopConfig(self.epochs, self.batch_size, self.lr, self.momentum)


CLBENCH_NAME = {"naive": "sft", "ewc": "ewc", "replay": "replay"}
AVALANCHE_NAME = {"naive": "Naive", "ewc": "EWC", "replay": "Replay"}


def clbench_strategy(method: str, cfg: CrossCheckConfig, stream: SplitDigits, seed: int):
    """The clbench strategy paired with Avalanche's ``method``, built through the registry."""
    options: dict = {"mode": "full"}
    if method == "ewc":
        last_epoch = max(math.ceil(len(e.train) / cfg.batch_size) for e in stream.experiences)
        options |= {"lam": 2 * cfg.ewc_lambda, "fisher_batches": last_epoch, "fisher": "batch"}
    elif method == "replay":
        options |= {"buffer_size": cfg.mem_size, "policy": "balanced", "ratio": 1.0}
    cls = registry.get(CLBENCH_NAME[method])
    return cls(cls.options_from(options, f"crosscheck.{method}"), seed=seed,
               train=TrainConfig(batch_size=cfg.batch_size, lr=cfg.lr, max_grad_norm=0.0),
               backend=TorchBackend())


@dataclass
class PairResult:
    method: str
    avalanche: list[list[list[float]]] = field(default_factory=list)  # R per seed
    clbench: list[list[list[float]]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: {"avalanche": 0.0, "clbench": 0.0})

    def acc(self, side: str) -> list[float]:
        return [average_accuracy(R) for R in getattr(self, side)]

    def bwt(self, side: str) -> list[float]:
        return [backward_transfer(R) for R in getattr(self, side)]

    @property
    def difference(self) -> float:
        return statistics.mean(self.acc("clbench")) - statistics.mean(self.acc("avalanche"))


def run_crosscheck(cfg: CrossCheckConfig = CrossCheckConfig()) -> list[PairResult]:
    """Every method of ``cfg`` on both sides for every seed; the same initial weights per seed."""
    import avalanche.training.supervised  # noqa: F401  (its import time is kept out of the timings)

    stream = load_split_digits()
    results = []
    for method in cfg.methods:
        pair = PairResult(method)
        for seed in cfg.seeds:
            torch.manual_seed(seed)
            init = DigitsMLP(hidden=cfg.hidden).state_dict()
            for side in ("avalanche", "clbench"):
                model = DigitsMLP(hidden=cfg.hidden)
                model.load_state_dict(init)
                t0 = time.perf_counter()
                if side == "avalanche":
                    R = train_avalanche(method, model, stream, cfg.loop, seed, cfg.ewc_lambda, cfg.mem_size)
                else:
                    R = train_clbench(clbench_strategy(method, cfg, stream, seed), model, stream.experiences,
                                      cfg.loop, seed)
                pair.seconds[side] += time.perf_counter() - t0
                getattr(pair, side).append(R)
        results.append(pair)
    return results


def _ms(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"


def render_table(results: list[PairResult], cfg: CrossCheckConfig = CrossCheckConfig()) -> str:
    """The Markdown report: the comparison table, per-seed values, and what was held equal."""
    setup = (f"scikit-learn digits, 5 experiences of 2 classes (class-incremental, one shared head); "
             f"MLP 64-{cfg.hidden}-10; SGD lr {cfg.lr} momentum {cfg.momentum} (one optimizer for the whole "
             f"stream); {cfg.epochs} epochs; batch {cfg.batch_size}; replay memory {cfg.mem_size}; EWC λ "
             f"{cfg.ewc_lambda:g} (Avalanche) = {2 * cfg.ewc_lambda:g} (clbench, λ/2 convention); seeds "
             f"{', '.join(map(str, cfg.seeds))}.")
    tolerance = (f"Final average accuracy (mean ± std over seeds). Tolerance: |clbench − Avalanche| ≤ "
                 f"{cfg.tolerance} on the mean.")
    header = ("| method | Avalanche | clbench | ACC Avalanche | ACC clbench | difference | within tolerance "
              "| BWT Avalanche | BWT clbench |")
    lines = ["# clbench vs Avalanche on split digits", "", setup, "", tolerance, "", header,
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        ok = "yes" if abs(r.difference) <= cfg.tolerance else "**no**"
        lines.append(f"| {r.method} | {AVALANCHE_NAME[r.method]} | {CLBENCH_NAME[r.method]} | {_ms(r.acc('avalanche'))} "
                     f"| {_ms(r.acc('clbench'))} | {r.difference:+.3f} | {ok} | {_ms(r.bwt('avalanche'))} "
                     f"| {_ms(r.bwt('clbench'))} |")
    lines += ["", "Per seed (final average accuracy, Avalanche / clbench):", "",
              "| method | " + " | ".join(f"seed {s}" for s in cfg.seeds) + " | seconds (Avalanche / clbench) |",
              "|---|" + "---|" * len(cfg.seeds) + "---|"]
    for r in results:
        cells = [f"{a:.3f} / {c:.3f}" for a, c in zip(r.acc("avalanche"), r.acc("clbench"))]
        lines.append(f"| {r.method} | " + " | ".join(cells)
                     + f" | {r.seconds['avalanche']:.2f} / {r.seconds['clbench']:.2f} |")
    return "\n".join(lines) + "\n"
