"""The hierarchical paired bootstrap (seeds, then items within a seed) on runs whose per-item
predictions are chosen by hand, so every interval can be worked out on paper."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clbench.reporting.bootstrap import bootstrap_intervals, load_suite_items, point_estimate
from clbench.results.aggregate import group_runs, load_runs
from tests.report_runs import TASKS, make_run


def write_item_run(root, label: str, seed: int, correct, base, reference):
    """A finished run whose ``qa`` scores are the means of the given per-item 0/1 lists:
    ``correct[i][j]`` after task i on task j (row 0 is the pretrained task, i.e. the base row)."""
    mean = [[sum(x) / len(x) for x in row] for row in correct]
    d = make_run(root, label, seed, mean, base=[sum(x) / len(x) for x in base],
                 reference=[sum(x) / len(x) for x in reference])
    write_predictions(d, "qa", correct, base, reference,
                      lambda v: {"correct": bool(v), "prediction": "", "answer": ""})
    return d


def write_predictions(d, suite: str, rows, base, reference, record) -> None:
    """Per-item prediction files of run ``d``: ``record(value)`` is the item's record (its id added) for
    every value of ``rows[1:]`` (after each task), ``base`` and ``reference``."""
    def put(folder, row):
        for task, values in zip(TASKS, row):
            recs = [{"id": f"{task}-{k}", **record(v)} for k, v in enumerate(values)]
            (d / "predictions" / folder).mkdir(parents=True, exist_ok=True)
            (d / "predictions" / folder / f"{task}.{suite}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))

    for i, row in enumerate(rows[1:], start=1):
        put(f"after_{i}", row)
    put("base", base)
    put("reference", reference)


def groups_of(root):
    return {lab: runs for (_, lab), runs in group_runs(load_runs([root])).items()}


N = 40
HALF = [1, 0] * (N // 2)
ALL, NONE = [1] * N, [0] * N


def matrix(final_medical):
    """general always right; medical learned (all right) after task 1, then ``final_medical``; notes learned."""
    return [[ALL, NONE, NONE], [ALL, ALL, NONE], [ALL, final_medical, ALL]]


def test_point_estimate_from_the_items_is_the_stored_metrics(tmp_path):
    d = write_item_run(tmp_path, "sft", 0, matrix(HALF), base=[ALL, NONE, NONE], reference=[NONE, NONE, NONE])
    (run,) = load_runs([tmp_path])
    items = load_suite_items(run, "qa")
    assert items is not None and items.general == (0,)
    got, stored = point_estimate(items), json.loads((d / "metrics.json").read_text())["suites"]["qa"]
    for key in ("acc", "bwt", "fwt", "fwt_base", "forgetting", "learning_acc", "general_retention"):
        assert got[key] == pytest.approx(stored[key]), key


def test_seeds_whose_items_are_all_alike_give_the_seed_level_interval(tmp_path):
    """Within a seed every item of medical is right (seed 0) or wrong (seed 1) after the last task, so
    resampling items changes nothing and the replicate mean over two drawn seeds is 1, 0.5 or 0
    (probabilities 1/4, 1/2, 1/4): the 95% percentile interval of final:medical is exactly [0, 1]."""
    write_item_run(tmp_path, "sft", 0, matrix(ALL), [ALL, NONE, NONE], [NONE] * 3)
    write_item_run(tmp_path, "sft", 1, matrix(NONE), [ALL, NONE, NONE], [NONE] * 3)
    iv = bootstrap_intervals(groups_of(tmp_path), "qa")
    assert (iv[("sft", "final:medical")]["low"], iv[("sft", "final:medical")]["high"]) == (0.0, 1.0)
    # a quantity equal on both seeds and for every item has a zero-width interval
    assert (iv[("sft", "final:notes")]["low"], iv[("sft", "final:notes")]["high"]) == (1.0, 1.0)
    assert iv[("sft", "acc")]["diff_vs_reference"] is None  # the reference has no difference to itself


def test_items_within_a_seed_are_resampled(tmp_path):
    """One seed, medical right on half of 40 items: a seeds-only bootstrap would give a zero-width
    interval; resampling items gives the binomial one, about ±1.96·√(0.25/40) = ±0.155."""
    write_item_run(tmp_path, "sft", 0, matrix(HALF), [ALL, NONE, NONE], [NONE] * 3)
    iv = bootstrap_intervals(groups_of(tmp_path), "qa")[("sft", "final:medical")]
    assert iv["low"] == pytest.approx(0.5 - 0.155, abs=0.04) and iv["high"] == pytest.approx(0.5 + 0.155, abs=0.04)
    # F = (f_general + f_medical) / 2 = (0 + 1 − final) / 2 under the same draws: the mirrored interval
    f = bootstrap_intervals(groups_of(tmp_path), "qa")[("sft", "forgetting")]
    assert (f["low"], f["high"]) == pytest.approx(((1 - iv["high"]) / 2, (1 - iv["low"]) / 2), abs=1e-12)


def test_the_difference_from_the_reference_is_paired_on_items(tmp_path):
    """'better' answers the same items as sft plus four more on every seed. Its own interval overlaps
    sft's, but drawn with the same seeds and items the difference is (flipped items drawn) / 40 / 3 ≥ 0
    in every replicate and 0 only if no flipped item is drawn on any drawn seed — an unpaired
    bootstrap would straddle zero."""
    rng = np.random.default_rng(0)
    for seed in (0, 1, 2):
        sft_final = [int(x) for x in rng.random(N) < 0.4]
        better = list(sft_final)
        flipped = [k for k, v in enumerate(better) if v == 0][:4]
        for k in flipped:
            better[k] = 1
        write_item_run(tmp_path, "sft", seed, matrix(sft_final), [ALL, NONE, NONE], [NONE] * 3)
        write_item_run(tmp_path, "better", seed, matrix(better), [ALL, NONE, NONE], [NONE] * 3)
    iv = bootstrap_intervals(groups_of(tmp_path), "qa")
    own, ref = iv[("better", "acc")], iv[("sft", "acc")]
    assert own["low"] < ref["high"]  # the two intervals overlap
    diff = own["diff_vs_reference"]
    assert 0 < diff["low"] < 4 / 40 / 3 < diff["high"]
    # the interval of the difference is much narrower than either strategy's own interval
    assert diff["high"] - diff["low"] < 0.5 * (ref["high"] - ref["low"])


def test_runs_without_predictions_get_no_bootstrap(tmp_path):
    make_run(tmp_path, "sft", 0, [[0.8, 0, 0], [0.6, 0.9, 0], [0.5, 0.3, 0.9]])
    iv = bootstrap_intervals(groups_of(tmp_path), "qa")
    assert iv and all(v is None for v in iv.values())


def test_same_results_give_the_same_intervals(tmp_path):
    for seed in (0, 1):
        write_item_run(tmp_path, "sft", seed, matrix(HALF[seed:] + HALF[:seed]), [ALL, NONE, NONE], [NONE] * 3)
    assert bootstrap_intervals(groups_of(tmp_path), "qa") == bootstrap_intervals(groups_of(tmp_path), "qa")


def test_seeds_with_other_probe_items_get_no_bootstrap(tmp_path):
    """Items are paired by position across seeds only when they are the same items."""
    write_item_run(tmp_path, "sft", 0, matrix(HALF), [ALL, NONE, NONE], [NONE] * 3)
    d = write_item_run(tmp_path, "sft", 1, matrix(HALF), [ALL, NONE, NONE], [NONE] * 3)
    for path in (d / "predictions").rglob("medical.qa.jsonl"):
        path.write_text(path.read_text().replace("medical-0", "medical-x0"))
    assert all(v is None for v in bootstrap_intervals(groups_of(tmp_path), "qa").values())


def write_ppl_run(root, label: str, seed: int, rows, base, reference):
    """A finished run with a ``ppl`` (perplexity) suite: ``rows[i][j]`` is task j's per-item list of
    ``(summed NLL, tokens)`` after task i (row 0 is the pretrained task's, i.e. the base row)."""
    import math

    def ppl(items):
        return math.exp(sum(n for n, _ in items) / sum(t for _, t in items))

    d = make_run(root, label, seed, [[ppl(x) for x in row] for row in rows], base=[ppl(x) for x in base],
                 reference=[ppl(x) for x in reference], suite="ppl", kind="perplexity")
    write_predictions(d, "ppl", rows, base, reference, lambda item: {"nll": item[0], "tokens": item[1]})
    return d


def ppl_items(rng, n: int, per_token: float):
    """``n`` items of 3-30 tokens whose NLL per token varies around ``per_token`` and grows with length,
    so per-item and per-token averages differ."""
    tokens = rng.integers(3, 31, n)
    return [(float(t * per_token * (0.5 + t / 30) * rng.uniform(0.8, 1.2)), int(t)) for t in tokens]


def test_a_perplexity_suite_bootstraps_token_weighted_and_equals_scipys_percentile_bootstrap(tmp_path):
    """One seed: the hierarchical bootstrap is the ordinary one over probe items. Its 95% percentile interval
    of the final perplexity on medical — exp(Σ NLL / Σ tokens) over the drawn items, as the probes score a
    suite — is scipy.stats.bootstrap's (paired NLL and tokens), within the Monte Carlo error of 20,000
    replicates each; a per-item average of NLL/token, or a 90% interval, lies many errors away."""
    import math

    from scipy import stats

    rng = np.random.default_rng(5)
    general, medical, notes = ppl_items(rng, 30, 1.0), ppl_items(rng, 40, 2.0), ppl_items(rng, 40, 2.5)
    learned, forgot, known = ppl_items(rng, 40, 0.5), ppl_items(rng, 40, 1.5), ppl_items(rng, 30, 1.2)
    rows = [[general, medical, notes], [known, learned, notes], [known, forgot, learned]]
    untrained = [ppl_items(rng, n, 4.0) for n in (30, 40, 40)]
    write_ppl_run(tmp_path, "sft", 0, rows, base=[general, medical, notes], reference=untrained)
    (run,) = load_runs([tmp_path])
    items = load_suite_items(run, "ppl")
    assert items.kind == "perplexity" and items.higher_is_better is False
    stored = run.suite("ppl")
    for key in ("acc", "forgetting", "learning_acc", "fwt", "fwt_base", "general_retention"):
        assert point_estimate(items)[key] == pytest.approx(stored[key], rel=1e-12), key
    B = 20_000
    iv = bootstrap_intervals(groups_of(tmp_path), "ppl", replicates=B)[("sft", "final:medical")]
    nll, tok = np.array([n for n, _ in forgot]), np.array([t for _, t in forgot], dtype=float)

    def per_token(n, t, axis=-1):
        return np.exp(n.sum(axis) / t.sum(axis))

    def per_item(n, t, axis=-1):
        return np.exp((n / t).mean(axis))

    res = stats.bootstrap((nll, tok), per_token, paired=True, vectorized=True, n_resamples=B, method="percentile",
                          confidence_level=0.95, rng=np.random.default_rng(0))
    sigma = float(res.standard_error)
    assert iv["low"] == pytest.approx(res.confidence_interval.low, abs=0.1 * sigma)
    assert iv["high"] == pytest.approx(res.confidence_interval.high, abs=0.1 * sigma)
    assert iv["low"] < per_token(nll, tok) < iv["high"]
    narrow = stats.bootstrap((nll, tok), per_token, paired=True, vectorized=True, n_resamples=B, method="percentile",
                             confidence_level=0.90, rng=np.random.default_rng(0)).confidence_interval
    assert abs(iv["low"] - narrow.low) > 0.2 * sigma and abs(iv["high"] - narrow.high) > 0.2 * sigma
    item_mean = stats.bootstrap((nll, tok), per_item, paired=True, vectorized=True, n_resamples=B,
                                method="percentile", rng=np.random.default_rng(0)).confidence_interval
    assert abs(iv["low"] - item_mean.low) > 1.0 * sigma and abs(iv["high"] - item_mean.high) > 1.0 * sigma
    # forgetting of a lower-is-better suite: final − best earlier, positive when perplexity rose
    f = bootstrap_intervals(groups_of(tmp_path), "ppl", replicates=200)[("sft", "forgetting")]
    assert 0 < f["low"] < stored["forgetting"] < f["high"]
    assert math.isclose(stored["forgetting"], ((per_token(*map(np.array, zip(*known))) - per_token(
        *map(np.array, zip(*general)))) + (per_token(nll, tok) - per_token(*map(np.array, zip(*learned))))) / 2)


def test_every_metric_interval_is_its_point_value_when_items_are_alike(tmp_path):
    """Items all right or all wrong within each (row, task): every replicate equals the point value, so each
    interval is [value, value] — which pins down which rows feed which metric. In particular FWT (Lopez-Paz)
    is against the untrained reference row (0 here; −0.5 against the base row), FWT_base against the base
    model's row (−1; 0 against the reference row)."""
    rows = [[ALL, NONE, ALL], [ALL, ALL, NONE], [ALL, ALL, ALL]]
    write_item_run(tmp_path, "sft", 0, rows, base=[ALL, NONE, ALL], reference=[NONE, NONE, NONE])
    write_item_run(tmp_path, "sft", 1, rows, base=[ALL, NONE, ALL], reference=[NONE, NONE, NONE])
    iv = bootstrap_intervals(groups_of(tmp_path), "qa", replicates=50)
    want = {"acc": 1.0, "bwt": 0.0, "fwt": 0.0, "fwt_base": -1.0, "forgetting": 0.0, "learning_acc": 1.0,
            "general_retention": 0.0, "final:general": 1.0, "final:medical": 1.0, "final:notes": 1.0}
    for key, value in want.items():
        assert (iv[("sft", key)]["low"], iv[("sft", key)]["high"]) == (value, value), key


def test_a_strategy_with_other_seeds_gets_its_own_draws_and_no_paired_difference(tmp_path):
    """'partial' ran seeds 0 and 1, sft seeds 0-2: its replicates are not drawn with sft's, so there is
    no paired difference to report (subtracting unpaired replicates would give a wrong, too wide interval),
    and no matched-learning interval either."""
    from clbench.reporting.bootstrap import bootstrap_replicates

    for seed in (0, 1, 2):
        write_item_run(tmp_path, "sft", seed, matrix(HALF), [ALL, NONE, NONE], [NONE] * 3)
        if seed < 2:
            write_item_run(tmp_path, "partial", seed, matrix(ALL), [ALL, NONE, NONE], [NONE] * 3)
            write_item_run(tmp_path, "twin", seed, matrix(ALL), [ALL, NONE, NONE], [NONE] * 3)
    groups = groups_of(tmp_path)
    reps = bootstrap_replicates(groups, "qa")
    assert reps.paired("partial", "twin") and not reps.paired("partial", "sft")
    iv = bootstrap_intervals(groups, "qa", reps=reps)
    assert iv[("partial", "acc")] is not None and iv[("partial", "acc")]["diff_vs_reference"] is None
    assert iv[("sft", "acc")]["diff_vs_reference"] is None


def test_three_seeds_that_answer_alike_give_the_one_seed_item_interval(tmp_path):
    """Probe items are the same on every seed, so a strategy's own interval draws them once per replicate
    for all drawn seeds: three seeds with identical answers (half of medical right) leave the item-level
    interval as wide as one seed's (about ±0.155). Items drawn afresh per seed would average three
    independent draws and shrink it by √3 — an interval that misses the item sampling the seeds share."""
    from clbench.reporting.build import build_report

    def report_interval(root):  # numbers.json of the report, per-task table, final score on medical
        build_report([root], root / "report", figures=False)
        numbers = json.loads((root / "report" / "toy" / "numbers.json").read_text())["tables"]["per_task"]
        return next(n["bootstrap"] for n in numbers if n["strategy"] == "sft" and n["column"] == "final:medical")

    write_item_run(tmp_path / "one", "sft", 0, matrix(HALF), [ALL, NONE, NONE], [NONE] * 3)
    for seed in (0, 1, 2):
        write_item_run(tmp_path / "three", "sft", seed, matrix(HALF), [ALL, NONE, NONE], [NONE] * 3)
    one, three = report_interval(tmp_path / "one"), report_interval(tmp_path / "three")
    assert three == bootstrap_intervals(groups_of(tmp_path / "three"), "qa")[("sft", "final:medical")]
    width = three["high"] - three["low"]
    assert width == pytest.approx(one["high"] - one["low"], rel=0.15) and width > 0.25
