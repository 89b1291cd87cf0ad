"""Per-strategy tuning: the validation/test split of probe items, the selection rule, and that
selection never touches a test item."""

import json
from dataclasses import replace

import pytest
import yaml

from clbench.errors import ConfigError
from clbench.results.files import RunFiles
from clbench.run.executors import LocalExecutor
from clbench.run.grid import plan, run_grid, run_tuning
from clbench.run.probe_split import split_indices, split_stream
from clbench.run.sweep import choose, pinned_yaml, plan_settings
from tests.conftest import micro_config

QUIET = {"progress": False, "echo": lambda *a: None}


def test_split_is_disjoint_covering_and_stable(micro_stream):
    for n in (2, 3, 10, 101):
        val, test = split_indices(n, 0.5, "medical", "qa", 0)
        assert set(val).isdisjoint(test) and sorted(val + test) == list(range(n))
        assert len(val) == min(n - 1, max(1, round(0.5 * n)))
        assert (val, test) == split_indices(n, 0.5, "medical", "qa", 0)  # stable
    assert split_indices(101, 0.5, "medical", "qa", 0) != split_indices(101, 0.5, "medical", "qa", 1)
    assert split_indices(101, 0.5, "medical", "qa", 0) != split_indices(101, 0.5, "notes", "qa", 0)
    with pytest.raises(ConfigError, match="at least 2"):
        split_indices(1, 0.5, "medical", "qa", 0)
    val_stream = split_stream(micro_stream, "validation", 0.5, 0)
    test_stream = split_stream(micro_stream, "test", 0.5, 0)
    for task, v, t in zip(micro_stream.tasks, val_stream.tasks, test_stream.tasks):
        for suite, sv, st in zip(task.probes, v.probes, t.probes):
            ids_v, ids_t = {i["id"] for i in sv.items}, {i["id"] for i in st.items}
            assert ids_v and ids_t and ids_v.isdisjoint(ids_t)
            assert ids_v | ids_t == {i["id"] for i in suite.items}
    assert val_stream.file_fingerprint == micro_stream.fingerprint() != val_stream.fingerprint()


def test_sweep_keys_resolve_and_bad_ones_are_refused(micro_cfg):
    from clbench.config.experiment import StrategySpec
    from clbench.run.sweep import candidates, sweep_space
    from clbench.train import registry

    ewc = registry.get("ewc")
    space = sweep_space(StrategySpec("ewc", sweep={"lr": ["1e-3", 2e-3], "lam": [1, 10], "train.batch_size": [4]}),
                        micro_cfg, ewc)
    assert space == {"train.lr": [1e-3, 2e-3], "options.lam": [1, 10], "train.batch_size": [4]}
    assert len(candidates(space)) == 4 and candidates(space)[1] == {"train.lr": 1e-3, "options.lam": 10,
                                                                     "train.batch_size": 4}
    with pytest.raises(ConfigError, match="not an option of 'ewc' or a training field") as err:
        sweep_space(StrategySpec("ewc", sweep={"lamda": [1]}), micro_cfg, ewc)
    assert "options.lam" in str(err.value)
    with pytest.raises(ConfigError, match="non-empty list"):
        sweep_space(StrategySpec("ewc", sweep={"lr": 1e-3}), micro_cfg, ewc)
    assert sweep_space(StrategySpec("frozen"), replace(micro_cfg, tuning=replace(micro_cfg.tuning,
                       sweep={"lr": [1e-3]})), registry.get("frozen")) == {}  # the default skips untrained ones


def test_choose_follows_the_stated_rule():
    res = [{"acc": 0.50, "learning_acc": 0.60, "forgetting": 0.1},
           {"acc": 0.40, "learning_acc": 0.95, "forgetting": 0.5},
           {"acc": 0.45, "learning_acc": 1.00, "forgetting": 0.6}]
    # best LA 1.0 -> LA >= 0.9 keeps candidates 1 and 2; the better ACC of those is candidate 2
    assert choose(res, "acc_given_la", 0.9)[0] == 2
    assert choose(res, "acc_given_la", 0.5)[0] == 0  # 0.6 >= 0.5: all eligible, best ACC wins
    assert choose(res, "acc", 0.9)[0] == 0
    assert choose(res, "learning_acc", 0.9)[0] == 2
    assert choose(res, "forgetting", 0.9)[0] == 0
    tie = [{"acc": 0.5, "learning_acc": 1.0, "forgetting": 0.0}] * 2
    assert choose(tie, "acc_given_la", 0.9)[0] == 0  # ties go to the candidate listed first


def test_choose_acc_given_la_for_a_lower_is_better_score():
    """Perplexity: the best LA is the lowest (4.0), the bar is 4.0 / 0.8 = 5.0 (not 0.8 × 4.0), eligible are
    LA ≤ 5.0, and of those the lowest ACC wins."""
    res = [{"acc": 9.0, "learning_acc": 4.0, "forgetting": 1.0},
           {"acc": 7.0, "learning_acc": 4.9, "forgetting": 2.0},
           {"acc": 6.0, "learning_acc": 5.5, "forgetting": 0.5},
           {"acc": 8.0, "learning_acc": 5.0, "forgetting": 0.1}]
    i, why = choose(res, "acc_given_la", 0.8, higher_is_better=False)
    assert i == 1 and "among 3 of 4 candidates" in why and "LA <= 0.8 x best LA 4.000" in why
    assert choose(res, "acc", 0.8, higher_is_better=False)[0] == 2
    assert choose(res, "learning_acc", 0.8, higher_is_better=False)[0] == 0
    assert choose(res, "forgetting", 0.8, higher_is_better=False)[0] == 3  # F is sign-aligned: lowest wins


class Poison:
    """A test probe item: any look at it fails the test."""

    def _touched(self, *a, **k):
        raise AssertionError("a test probe item was read during tuning")

    __getitem__ = get = keys = items = __iter__ = __len__ = __contains__ = __str__ = __repr__ = _touched
    __eq__ = __hash__ = __reduce__ = __reduce_ex__ = __getstate__ = _touched


def poison_test_items(stream, fraction, seed):
    tasks = []
    for task in stream.tasks:
        suites = []
        for suite in task.probes:
            _, test = split_indices(len(suite.items), fraction, task.name, suite.name, seed)
            suites.append(replace(suite, items=tuple(Poison() if i in test else it for i, it in enumerate(suite.items))))
        tasks.append(replace(task, probes=tuple(suites)))
    return replace(stream, tasks=tuple(tasks), derived={"source_fingerprint": stream.fingerprint()})


def test_selection_never_reads_a_test_item(micro_cache, micro_base_dir, tmp_path):
    cfg = micro_config(tmp_path, cache_dir=micro_cache, **{"tuning.sweep": "{lr: [0.0005, 0.02]}"})
    stream, specs = plan(cfg)
    poisoned = poison_test_items(stream, cfg.tuning.val_fraction, cfg.tuning.split_seed)
    (tuned,) = run_tuning(cfg, poisoned, specs, plan_settings(cfg, specs, stream), micro_base_dir, LocalExecutor(1),
                          **QUIET)
    rec = tuned.record
    assert rec["swept"] == {"train.lr": [0.0005, 0.02]} and rec["split"] == "validation"
    assert [c["setting"] for c in rec["candidates"]] == [{"train.lr": 0.0005}, {"train.lr": 0.02}]
    by_hand = choose(rec["candidates"], "acc_given_la", 0.9)
    assert rec["chosen"] == rec["candidates"][by_hand[0]]["setting"] and rec["reason"] == by_hand[1]
    assert tuned.entry.config(cfg).train.lr == rec["chosen"]["train.lr"]
    written = json.loads((tmp_path / "results" / "default" / "micro" / "sft" / "tuning.json").read_text())
    assert written["chosen"] == rec["chosen"]
    # the choice, pinned as `clbench run` prints it, runs without candidates and keeps the full record
    block = yaml.safe_load(pinned_yaml([tuned]))
    assert block == {"tuning": {"pinned": {"sft": rec["chosen"]}}}
    pinned_cfg = replace(cfg, tuning=replace(cfg.tuning, sweep={}, pinned=block["tuning"]["pinned"]))
    (again,) = run_tuning(pinned_cfg, poisoned, specs, plan_settings(pinned_cfg, specs, stream), micro_base_dir,
                          LocalExecutor(1), **QUIET)
    assert again.record == rec and again.entry.config(cfg).train.lr == tuned.entry.config(cfg).train.lr


def test_tuned_grid_scores_the_chosen_setting_on_test_items(micro_cache, micro_base_dir, tmp_path):
    cfg = micro_config(tmp_path, cache_dir=micro_cache, strategies="[sft, frozen]",
                       **{"tuning.sweep": "{lr: [0.0005, 0.02]}"})
    results = run_grid(cfg, **QUIET)
    assert len(results) == 2  # frozen does not train: not swept, but scored on the test items too
    split = json.loads((tmp_path / "results" / "default" / "micro" / "probe_split.json").read_text())
    tuning = json.loads((tmp_path / "results" / "default" / "micro" / "sft" / "tuning.json").read_text())
    assert not (tmp_path / "results" / "default" / "micro" / "frozen" / "tuning.json").exists()
    for path, _ in results:
        files = RunFiles(path)
        config = json.loads(files.config.read_text())
        assert config["probe_split"] == {"role": "test", "val_fraction": 0.5, "split_seed": 0}
        for key, entry in split["suites"].items():
            task, suite = key.split("/")
            ids = {json.loads(line)["id"] for line in (files.predictions(2) / f"{task}.{suite}.jsonl").open()}
            assert len(ids) == entry["test_items"] and ids.isdisjoint(entry["validation_ids"])
    sft_cfg = json.loads(RunFiles(results[0][0]).config.read_text())
    assert sft_cfg["train"]["lr"] == tuning["chosen"]["train.lr"]
    for cand in tuning["candidates"]:  # candidates were scored on validation items only
        files = RunFiles(cand["run"])
        assert json.loads(files.config.read_text())["probe_split"]["role"] == "validation"
        ids = {json.loads(line)["id"] for line in (files.predictions(2) / "medical.qa.jsonl").open()}
        assert ids == set(split["suites"]["medical/qa"]["validation_ids"])


def test_pinned_settings_run_on_test_items_without_candidates(micro_cache, micro_base_dir, tmp_path, capsys):
    cfg = micro_config(tmp_path, cache_dir=micro_cache, **{"tuning.pinned": "{sft: {lr: 0.02}}",
                                                          "tuning.pinned_note": "chosen earlier"})
    ((path, _),) = run_grid(cfg, **QUIET)
    config = json.loads(RunFiles(path).config.read_text())
    assert config["train"]["lr"] == 0.02 and config["probe_split"]["role"] == "test"
    assert not (tmp_path / "results" / "default-tuning").exists()  # no candidate runs
    rec = json.loads((tmp_path / "results" / "default" / "micro" / "sft" / "tuning.json").read_text())
    assert rec["pinned"] and rec["chosen"] == {"train.lr": 0.02} and "chosen earlier" in rec["reason"]
    # a label the grid does not have (a grid narrowed by --strategies, or a misspelling) is named and skipped
    capsys.readouterr()
    ((other, _),) = run_grid(micro_config(tmp_path / "x", cache_dir=micro_cache,
                                          **{"tuning.pinned": "{ewc: {lr: 0.02}, sft: {lr: 0.03}}"}), **QUIET)
    assert "tuning.pinned.ewc: no row with this label in this grid (rows: sft); skipped" in capsys.readouterr().err
    assert json.loads(RunFiles(other).config.read_text())["train"]["lr"] == 0.03


def test_which_items_a_row_scores_does_not_depend_on_the_rows_one_invocation_runs(micro_cache, micro_base_dir,
                                                                                  tmp_path):
    """A grid narrowed to rows that are neither tuned nor pinned (``--set strategies=[...]``, adding a frontier
    rate to a tuned experiment) scores them on the test items, as the experiment's other rows are; before, it
    scored every item, and the report silently left such a row out of the frontier (its config differed)."""
    def role(path):
        return (json.loads(RunFiles(path).config.read_text()).get("probe_split") or {}).get("role")

    extra = "[{name: sft, label: sft-lr1e-2, train: {lr: 0.01}}]"
    ((narrowed, _),) = run_grid(micro_config(tmp_path, cache_dir=micro_cache, strategies=extra,
                                             **{"tuning.pinned": "{sft: {lr: 0.02}}"}), **QUIET)
    assert role(narrowed) == "test"
    assert (tmp_path / "results" / "default" / "micro" / "probe_split.json").exists()
    # an experiment whose runs were split stays split, even when a later config has no tuning section
    later = "[{name: sft, label: sft-lr3e-2, train: {lr: 0.03}}]"
    ((after, _),) = run_grid(micro_config(tmp_path, cache_dir=micro_cache, strategies=later), **QUIET)
    assert role(after) == "test"
    # an experiment that never tunes scores every item
    ((plain, _),) = run_grid(micro_config(tmp_path / "fresh", cache_dir=micro_cache), **QUIET)
    assert role(plain) is None


def test_a_tuning_only_grid_reports_its_choices_instead_of_failing_on_a_missing_table(micro_cache, micro_base_dir,
                                                                                         tmp_path, capsys):
    """``seeds: []`` (configs/bench_real_tune.yaml) runs candidates only; asked for a report, the CLI used to
    end a successful tuning with 'no finished runs found' and exit code 1."""
    from tests.cli_helpers import cli, micro_args

    args = [a for a in micro_args(tmp_path / "results", micro_cache) if a != "--no-report"]
    at = args.index("--seeds")
    del args[at:at + 2]
    args += ["--set", "seeds=[]", "--set", "tuning.sweep={lr: [0.0005, 0.02]}",
             "--report-dir", str(tmp_path / "report")]
    rc, out, err = cli(args, capsys)
    assert rc == 0, err
    record = tmp_path / "results" / "default" / "micro" / "sft" / "tuning.json"
    assert json.loads(record.read_text())["chosen"]["train.lr"] in (0.0005, 0.02)
    assert "no report: the experiment has no seeds" in out
    assert str(tmp_path / "results" / "default") + "/<stream>/<label>/tuning.json" in out
    assert not (tmp_path / "report").exists()
