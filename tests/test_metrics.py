"""Metric formulas on hand-computed matrices (values worked out in the comments)."""

import pytest

from clbench.results import metrics as M

# after task 0: [0.90, 0.10, 0.20]; after task 1: [0.95, 0.80, 0.30]; after task 2: [0.50, 0.40, 0.70]
R = [[0.90, 0.10, 0.20], [0.95, 0.80, 0.30], [0.50, 0.40, 0.70]]
B = [0.05, 0.10, 0.10]
BASE = [0.92, 0.10, 0.20]


def test_average_accuracy_is_mean_of_last_row():
    assert M.average_accuracy(R) == pytest.approx((0.5 + 0.4 + 0.7) / 3)


def test_bwt_divides_by_T_minus_1():
    # ((0.50 - 0.90) + (0.40 - 0.80)) / 2
    assert M.backward_transfer(R) == pytest.approx(-0.4)


def test_fwt_uses_row_before_and_reference():
    # ((R[0][1] - b1) + (R[1][2] - b2)) / 2 = ((0.1 - 0.1) + (0.3 - 0.1)) / 2
    assert M.forward_transfer(R, B) == pytest.approx(0.1)


def test_forgetting_takes_max_over_earlier_rows_not_the_diagonal():
    # task 0: max(0.90, 0.95) - 0.50 = 0.45 (the diagonal would give 0.40); task 1: 0.80 - 0.40
    assert M.forgetting_per_task(R) == pytest.approx([0.45, 0.40])
    assert M.average_forgetting(R) == pytest.approx(0.425)
    assert M.average_forgetting(R) != pytest.approx(-M.backward_transfer(R))


def test_learning_accuracy_is_the_diagonal():
    assert M.learning_accuracy(R) == pytest.approx((0.9 + 0.8 + 0.7) / 3)


def test_general_retention_is_change_from_base_on_pretrained_tasks():
    assert M.general_retention(R, BASE, [0]) == pytest.approx(0.50 - 0.92)
    assert M.general_retention(R, BASE, []) is None


def test_lower_is_better_forgetting_uses_the_best_earlier_value():
    ppl = [[2.0, 50.0], [3.0, 4.0]]
    assert M.forgetting_per_task(ppl, higher_is_better=False) == [pytest.approx(1.0)]
    # a perplexity that went *down* is negative forgetting
    assert M.forgetting_per_task([[5.0, 9.0], [4.0, 3.0]], higher_is_better=False) == [pytest.approx(-1.0)]


def test_missing_suites_are_left_out_of_means():
    Rn = [[0.9, None], [0.5, 0.8]]
    assert M.average_accuracy(Rn) == pytest.approx(0.65)
    assert M.backward_transfer(Rn) == pytest.approx(-0.4)
    assert M.forward_transfer(Rn, [0.0, 0.1]) is None


def test_single_task_has_no_transfer():
    assert M.backward_transfer([[0.7]]) is None
    assert M.forward_transfer([[0.7]], [0.1]) is None
    assert M.average_forgetting([[0.7]]) is None


def test_summarize_collects_everything():
    s = M.summarize(R, B, BASE, [0])
    assert s["acc"] == pytest.approx(M.average_accuracy(R))
    assert s["final_per_task"] == R[-1]
    assert s["higher_is_better"] is True
    assert set(s) >= {"acc", "bwt", "fwt", "forgetting", "learning_acc", "general_retention"}
