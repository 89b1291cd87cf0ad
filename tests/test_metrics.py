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


def test_learning_accuracy_is_the_diagonal_over_the_trained_tasks():
    assert M.learning_accuracy(R) == pytest.approx((0.9 + 0.8 + 0.7) / 3)  # every task trained
    # task 0 pretrained: its diagonal entry is the base model's score, not learning
    assert M.learning_accuracy(R, [0]) == pytest.approx((0.8 + 0.7) / 2)
    assert M.learning_accuracy([[0.5]], [0]) is None


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
    """Every metric of summarize() against the hand-computed values of the functions' tests above."""
    s = M.summarize(R, B, BASE, [0])
    assert set(s) == {"acc", "bwt", "fwt", "fwt_base", "forgetting", "learning_acc", "general_retention",
                      "final_per_task", "forgetting_per_task", "higher_is_better"}
    assert s["acc"] == pytest.approx((0.5 + 0.4 + 0.7) / 3)
    assert s["bwt"] == pytest.approx(-0.4)
    # against the untrained reference B: ((0.1 - 0.1) + (0.3 - 0.1)) / 2; against BASE it would be 0.05
    assert s["fwt"] == pytest.approx(0.1)
    # FWT_base: only task 2 has a trained predecessor (task 0 is pretrained): R[1][2] - BASE[2] = 0.3 - 0.2
    assert s["fwt_base"] == pytest.approx(0.1)
    assert s["forgetting"] == pytest.approx(0.425)
    assert s["forgetting_per_task"] == pytest.approx([0.45, 0.40])
    assert s["learning_acc"] == pytest.approx((0.8 + 0.7) / 2)  # task 0 is pretrained: not in LA
    assert s["general_retention"] == pytest.approx(0.50 - 0.92)
    assert s["final_per_task"] == R[-1]
    assert s["higher_is_better"] is True
    low = M.summarize(R, B, BASE, [0], higher_is_better=False)
    # lower is better: f_j = final - min(earlier): task 0: 0.50 - min(0.90, 0.95), task 1: 0.40 - min(0.10, 0.80)
    assert low["forgetting_per_task"] == pytest.approx([-0.40, 0.30])
    assert low["higher_is_better"] is False


def test_fwt_for_pretrained_models_is_against_the_base_over_trained_predecessors():
    """The report's FWT: R[j-1][j] - base[j] for tasks whose previous task was trained; a pretrained
    predecessor's row is the base row, identical for every strategy, so it never enters."""
    R4 = [[0.9, 0.2, 0.1, 0.3], [0.8, 0.7, 0.25, 0.35], [0.7, 0.6, 0.8, 0.5], [0.6, 0.5, 0.7, 0.9]]
    base = [0.9, 0.2, 0.1, 0.3]
    b = [0.0, 0.0, 0.0, 0.0]
    # tasks 2 and 3 have trained predecessors: ((0.25 - 0.1) + (0.5 - 0.3)) / 2
    assert M.forward_transfer_from_base(R4, base, [0]) == pytest.approx(0.175)
    # two pretrained tasks: only task 3 (R[2][3] - base[3])
    assert M.forward_transfer_from_base(R4, base, [0, 1]) == pytest.approx(0.2)
    # Lopez-Paz's FWT on the same matrix includes the strategy-independent first term R[0][1] - b[1]
    assert M.forward_transfer(R4, b) == pytest.approx((0.2 + 0.25 + 0.5) / 3)
    assert M.forward_transfer_from_base([[0.9, 0.2], [0.8, 0.7]], [0.9, 0.2], [0]) is None  # one trained task
    assert M.forward_transfer_from_base(R4, base, []) == pytest.approx((0.0 + 0.15 + 0.2) / 3)


def test_average_forgetting_of_a_lower_is_better_suite_keeps_the_sign_alignment():
    """summarize() passes the direction on to the average too, not only to the per-task values: for
    perplexity F is the mean of (final − best earlier), here (−0.40 + 0.30) / 2."""
    low = M.summarize(R, B, BASE, [0], higher_is_better=False)
    assert low["forgetting"] == pytest.approx(-0.05)
    assert M.average_forgetting(R, higher_is_better=False) == pytest.approx(-0.05)


def test_summarize_of_arrays_is_summarize_of_each_element_bitwise():
    """The bootstrap computes every replicate in one call with arrays as cells: element by element it must
    be exactly the numbers summarize() gives for each matrix of plain numbers (a missing suite stays None)."""
    import numpy as np

    rng = np.random.default_rng(3)
    shape = (4, 3)
    cells = rng.random((3, 3, *shape))
    ref, base = rng.random((3, *shape)), rng.random((3, *shape))
    for hib in (True, False):
        def at(x, idx):
            return None if x is None else float(x[idx])

        arr_R = [[None if (i, j) == (0, 2) else cells[i, j] for j in range(3)] for i in range(3)]
        whole = M.summarize(arr_R, list(ref), list(base), [0], hib)
        for idx in np.ndindex(*shape):
            one = M.summarize([[at(c, idx) for c in row] for row in arr_R], [at(x, idx) for x in ref],
                              [at(x, idx) for x in base], [0], hib)
            for key in ("acc", "bwt", "fwt", "fwt_base", "forgetting", "learning_acc", "general_retention"):
                assert float(whole[key][idx]) == one[key], (hib, key, idx)  # bitwise, not approximately
            assert [float(f[idx]) for f in whole["forgetting_per_task"]] == one["forgetting_per_task"]
