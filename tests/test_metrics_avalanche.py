"""clbench's metrics against Avalanche 0.6's standalone metric classes, fed the same accuracy matrices.

Where the definitions coincide the numbers must be equal: Avalanche's stream forgetting (first score
after training an experience minus the final score, averaged) is −BWT; its forward transfer (score
after the previous experience minus the score at random initialisation) is Lopez-Paz & Ranzato's FWT.
Chaudhry's forgetting (clbench's ``forgetting``) uses the *best* earlier score instead of the score
right after training, so it differs whenever a task improved after it was learned.
"""

from __future__ import annotations

import pytest
import torch

from clbench.backends.torch_backend import TorchBackend
from clbench.bench.crosscheck import CrossCheckConfig
from clbench.bench.crosscheck.digits import load_split_digits
from clbench.bench.crosscheck.loop import LoopConfig, train_clbench
from clbench.bench.crosscheck.model import DigitsMLP, accuracy
from clbench.results.metrics import (
    average_forgetting,
    backward_transfer,
    forgetting_per_task,
    forward_transfer,
)


def avalanche_stream_metrics(R, b):
    """Feed R row by row the way Avalanche's stream plugins do after each training experience."""
    from avalanche.evaluation.metrics import BWT, Forgetting, ForwardTransfer, Mean

    forgetting, bwt, fwt = Forgetting(), BWT(), ForwardTransfer()
    for k, v in enumerate(b):  # evaluation at initialisation (eval_every > -1): ForwardTransfer's `initial`
        fwt.update(k, v, initial=True)
    for i, row in enumerate(R):  # evaluation after training experience i
        forgetting.reset_last()
        bwt.reset_last()
        for j, v in enumerate(row):
            forgetting.update(j, v, initial=(j == i))
            bwt.update(j, v, initial=(j == i))
            if j == i + 1:
                fwt.update(j, v)
    stream_f, stream_b, stream_fwt = Mean(), Mean(), Mean()
    for v in forgetting.result().values():
        stream_f.update(v, weight=1)
    for v in bwt.result().values():
        stream_b.update(v, weight=1)
    for v in fwt.result().values():
        stream_fwt.update(v, weight=1)
    return {"per_task_forgetting": forgetting.result(), "forgetting": stream_f.result(), "bwt": stream_b.result(),
            "fwt": stream_fwt.result()}


# R[i][j]: score on task j after training task i; task 0 improves after it was learned (0.6 -> 0.8)
IMPROVES = [[0.6, 0.1, 0.0, 0.1],
            [0.8, 0.7, 0.2, 0.1],
            [0.5, 0.9, 0.8, 0.3],
            [0.4, 0.6, 0.7, 0.9]]
B = [0.1, 0.1, 0.0, 0.25]


def test_matching_definitions_agree_on_a_hand_built_matrix():
    ava = avalanche_stream_metrics(IMPROVES, B)
    assert ava["forgetting"] == pytest.approx(-backward_transfer(IMPROVES))
    assert ava["bwt"] == pytest.approx(backward_transfer(IMPROVES))
    assert ava["fwt"] == pytest.approx(forward_transfer(IMPROVES, B))
    # by hand: BWT = ((0.4-0.6) + (0.6-0.7) + (0.7-0.8)) / 3 = -0.4/3; FWT = ((0.1-0.1)+(0.2-0.0)+(0.3-0.25))/3
    assert backward_transfer(IMPROVES) == pytest.approx(-0.4 / 3)
    assert forward_transfer(IMPROVES, B) == pytest.approx(0.25 / 3)


def test_chaudhry_forgetting_differs_from_avalanches_when_a_task_improves_later():
    ava = avalanche_stream_metrics(IMPROVES, B)
    ours = forgetting_per_task(IMPROVES)
    # task 0: Avalanche 0.6 - 0.4 = 0.2; Chaudhry max(0.6, 0.8, 0.5) - 0.4 = 0.4
    assert ava["per_task_forgetting"][0] == pytest.approx(0.2)
    assert ours[0] == pytest.approx(0.4)
    # task 1 peaks later too (0.9 after task 2): Avalanche 0.1, Chaudhry 0.3; task 2 never improves: both 0.1
    assert ava["per_task_forgetting"][1] == pytest.approx(0.1) and ours[1] == pytest.approx(0.3)
    assert ava["per_task_forgetting"][2] == pytest.approx(0.1) == pytest.approx(ours[2])
    assert average_forgetting(IMPROVES) - ava["forgetting"] == pytest.approx((0.2 + 0.2 + 0.0) / 3)


def test_chaudhry_forgetting_equals_avalanches_when_scores_only_fall():
    R = [[0.9, 0.0, 0.0], [0.7, 0.8, 0.0], [0.5, 0.6, 0.95]]
    assert average_forgetting(R) == pytest.approx(avalanche_stream_metrics(R, [0.0] * 3)["forgetting"])


@pytest.mark.parametrize("name,options", [("sft", {}), ("replay", {"buffer_size": 100, "ratio": 1.0})])
def test_clbench_run_matrices_give_the_same_numbers_in_avalanche(name, options):
    """Real accuracy matrices from clbench strategies on split digits, reference row from the untrained net."""
    from clbench.config.experiment import TrainConfig
    from clbench.train import registry

    torch.set_num_threads(1)
    stream = load_split_digits()
    torch.manual_seed(0)
    model = DigitsMLP(hidden=64)
    b = [accuracy(model, e.test_x, e.test_y) for e in stream.experiences]  # random initialisation
    cls = registry.get(name)
    strategy = cls(cls.options_from({"mode": "full", **options}, name), seed=0,
                   train=TrainConfig(max_grad_norm=0.0), backend=TorchBackend())
    cfg = CrossCheckConfig()
    R = train_clbench(strategy, model, stream.experiences, LoopConfig(3, cfg.batch_size, cfg.lr, cfg.momentum), 0)
    ava = avalanche_stream_metrics(R, b)
    assert ava["forgetting"] == pytest.approx(-backward_transfer(R), abs=1e-12)
    assert ava["bwt"] == pytest.approx(backward_transfer(R), abs=1e-12)
    assert ava["fwt"] == pytest.approx(forward_transfer(R, b), abs=1e-12)
    assert backward_transfer(R) < 0  # the matrix is a real continual-learning run, not a constant
