"""Every bad input of issue 14's table: the exact message, exit code 2, no traceback, and a results
directory left exactly as it was (the kill and lock rows are in ``tests/test_faults.py``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clbench.errors import ConfigError
from tests.cli_helpers import cli, micro_args, tree
from tests.report_runs import make_run

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "tasks" / "lm_eval"


def refused(capsys, args, results: Path) -> str:
    """Run ``clbench <args>``; assert exit code 2, no traceback, ``results`` untouched; return stderr."""
    before = tree(results)
    rc, _, err = cli(args, capsys)
    assert rc == 2, err
    assert "Traceback" not in err and "clbench: error: " in err, err
    assert tree(results) == before
    return err[err.index("clbench: error: "):]  # (after any progress bar a library drew)


# --- config bounds --------------------------------------------------------------------------------


@pytest.mark.parametrize(("override", "message"), [
    ("train.steps_per_task=-1", "--set train.steps_per_task: must be >= 1, got -1"),
    ("train.steps_per_task=0", "--set train.steps_per_task: must be >= 1, got 0"),
    ("train.lr=.inf", "--set train.lr: expected a finite number, got inf"),
    ("train.lr=.nan", "--set train.lr: expected a finite number, got nan"),
    ("train.lr=0", "--set train.lr: must be > 0, got 0.0"),
    ("train.lr=1e9", "--set train.lr: must be <= 1, got 1000000000.0"),
    ("train.lr=1e300", "--set train.lr: must be <= 1, got 1e+300"),
    ("train.batch_size=0", "--set train.batch_size: must be >= 1, got 0"),
    ("eval.max_new_tokens=0", "--set eval.max_new_tokens: must be >= 1, got 0"),
    ("model.max_length=0", "--set model.max_length: must be >= 2, got 0"),
    ("model.max_length=1", "--set model.max_length: must be >= 2, got 1"),
    ("model.num_heads=3", "model.num_heads: must divide model.hidden_size (32), got 3"),
])
def test_out_of_bounds_options_are_refused_before_anything_is_written(override, message, tmp_path, capsys):
    results = tmp_path / "results"
    err = refused(capsys, [*micro_args(results, tmp_path / "cache"), "--set", override], results)
    assert err == f"clbench: error: {message}\n"
    assert not results.exists()


def test_every_numeric_field_of_the_run_configs_has_a_bound():
    """Nothing numeric in TrainConfig, ModelConfig, EvalConfig is left unchecked."""
    import dataclasses

    from clbench.config.experiment import EvalConfig, ModelConfig, TrainConfig

    for cls in (TrainConfig, ModelConfig, EvalConfig):
        for f in dataclasses.fields(cls):
            if f.type in ("int", "float"):
                assert f.metadata.get("bounds"), f"{cls.__name__}.{f.name} has no bound"


# --- divergence ----------------------------------------------------------------------------------


@pytest.fixture
def nan_sft():
    """A test strategy: SFT whose loss turns NaN at the third step of task 2."""
    from clbench.strategies.sft import SFT
    from clbench.train import registry

    @registry.register("_nan_sft")
    class NanSFT(SFT):
        def before_task(self, task, model):
            self.task, self.calls = task.index, 0

        def loss(self, model, batch):
            out = super().loss(model, batch)
            self.calls += 1
            if self.task == 2 and self.calls == 3:
                out.loss = out.loss * float("nan")
            return out

    yield NanSFT
    registry._STRATEGIES.pop("_nan_sft")


def test_nan_loss_is_a_clbench_error_naming_task_and_step(nan_sft, micro_cache, micro_base_dir, tmp_path, capsys):
    args = micro_args(tmp_path / "results", micro_cache)
    args[args.index("sft")] = "_nan_sft"
    rc, _, err = cli(args, capsys)
    assert rc == 2 and "Traceback" not in err
    assert "\nclbench: error: loss is nan at task 2 ('notes') step 3: training diverged; lower train.lr (or " \
           "check the data)" in "\n" + err
    run = next((tmp_path / "results").rglob("seed_0"))
    assert (run / "eval" / "after_1.json").exists() and not (run / "eval" / "after_2.json").exists()


def test_a_loss_that_does_not_fall_is_flagged_in_metrics_and_report(micro_cache, micro_base_dir, tmp_path, capsys):
    """At lr 1 the loss of task 'medical' jumps up and stays above where it started; the run finishes,
    flagged (and its provenance echoes the stream's allow_code and its tasks' data sources)."""
    stream = tmp_path / "micro_code.yaml"
    text = (ROOT / "tasks" / "micro.yaml").read_text() + "allow_code: true\n"
    stream.write_text(text.replace("  - name: medical\n", "  - name: medical\n    source: {package: demo, version: '1.0'}\n"))
    rc, _, err = cli(micro_args(tmp_path / "results", micro_cache, stream=str(stream),
                                train={"lr": 1.0, "steps_per_task": 8}), capsys)
    assert rc == 0, err
    run = next((tmp_path / "results").rglob("seed_0"))
    check = json.loads((run / "metrics.json").read_text())["loss_check"]
    assert check["not_falling"] == ["medical"]
    assert check["per_task"]["medical"]["end"] > check["per_task"]["medical"]["start"]
    assert check["per_task"]["notes"]["fell"] is True
    provenance = json.loads((run / "provenance.json").read_text())
    assert provenance["allow_code"] is True
    assert provenance["data_sources"] == {"medical": {"package": "demo", "version": "1.0"}}
    rc, _, err = cli(["report", str(tmp_path / "results"), "-o", str(tmp_path / "report"), "--no-figures"], capsys)
    assert rc == 0, err
    readme = (tmp_path / "report" / "README.md").read_text()
    assert "## Runs whose training loss did not fall" in readme
    assert f"`sft` seed 0 (`{run}`): medical" in readme


def test_loss_check_judges_only_tasks_with_enough_steps():
    from clbench.results.loss_check import loss_check

    log = [{"task": 1, "loss": x} for x in [4.0, 4.2, 3.0, 3.1, 2.0, 2.5, 1.0, 1.2]]  # 4.0 → last quarter 1.1
    log += [{"task": 2, "loss": x} for x in [3.0, 9.0, 6.0, 5.0, 4.0, 3.5, 3.0, 3.0]]  # up, back to 3.0: flagged
    log += [{"task": 3, "loss": x} for x in [1.0, 5.0]]  # two steps: not judged
    check = loss_check(log, ["general", "a", "b", "c"])
    assert check["per_task"]["a"] == {"start": 4.0, "end": 1.1, "fell": True}
    assert check["per_task"]["b"]["fell"] is False and check["per_task"]["c"]["fell"] is None
    assert check["not_falling"] == ["b"] and "general" not in check["per_task"]


# --- stream files --------------------------------------------------------------------------------


def user_stream(tmp_path: Path, train_block: str, train_file: bytes | None = None) -> Path:
    """The micro stream's general task plus a user task reading ``train.jsonl``."""
    (tmp_path / "qa.jsonl").write_text('{"prompt": "Q: x?", "answer": "y"}\n')
    if train_file is not None:
        (tmp_path / "train.jsonl").write_bytes(train_file)
    path = tmp_path / "user.yaml"
    path.write_text(f"""name: user
primary_metric: qa
tasks:
  - name: general
    pretrained: true
    generated: {{domain: general, entities: 4}}
  - name: mine
    train: {train_block}
    probes:
      - {{name: qa, kind: exact_match, path: qa.jsonl}}
""")
    return path


def test_undecodable_byte_names_file_line_and_column(tmp_path, capsys):
    data = b'{"text": "fine"}\n{"text": "also fine"}\n{"text": "caf\xe9 latte"}\n'
    stream = user_stream(tmp_path, "{path: train.jsonl}", data)
    results = tmp_path / "results"
    err = refused(capsys, micro_args(results, tmp_path / "cache", stream=str(stream)), results)
    assert err == (f"clbench: error: {tmp_path / 'train.jsonl'}:3: not UTF-8: byte 0xe9 at column 14 "
                   "(save the file as UTF-8)\n")


def test_undecodable_byte_in_a_stream_file_names_its_line(tmp_path):
    from clbench.data.streams import load_stream

    path = tmp_path / "s.yaml"
    path.write_bytes(b"name: s\ndescription: caf\xe9\ntasks: []\n")
    with pytest.raises(ConfigError, match=r"s\.yaml:2: not UTF-8: byte 0xe9 at column 17"):
        load_stream(str(path))


def test_undecodable_byte_in_csv_names_its_line(tmp_path):
    from clbench.data.streams import load_stream

    (tmp_path / "train.csv").write_bytes(b"prompt,completion\nA,b\nC,d\xff\n")
    with pytest.raises(ConfigError, match=r"train\.csv:3: not UTF-8: byte 0xff at column 4"):
        load_stream(str(user_stream(tmp_path, "{path: train.csv}")))


def test_unknown_key_in_a_source_block_says_did_you_mean(tmp_path, capsys):
    stream = user_stream(tmp_path, "{path: train.jsonl, feilds: {}}", b'{"text": "x"}\n')
    results = tmp_path / "results"
    err = refused(capsys, micro_args(results, tmp_path / "cache", stream=str(stream)), results)
    assert err == (f"clbench: error: {stream}.tasks[1].train: unknown key 'feilds' — did you mean 'fields'? "
                   "(allowed: fields, format, path, split)\n")


def test_missing_required_key_names_it(tmp_path):
    from clbench.data.streams import load_stream

    stream = user_stream(tmp_path, "{format: jsonl}", b'{"text": "x"}\n')
    with pytest.raises(ConfigError) as exc:
        load_stream(str(stream))
    assert str(exc.value) == (f"{stream}.tasks[1].train: missing required key 'path' "
                              "(allowed: fields, format, path, split)")


def test_a_record_over_the_byte_limit_is_refused_without_reading_it_whole(tmp_path, monkeypatch):
    from clbench.data import readers
    from clbench.data.streams import load_stream

    monkeypatch.setattr(readers, "MAX_RECORD_BYTES", 1000)
    data = b'{"text": "short"}\n{"text": "' + b"x" * 5000 + b'"}\n'
    with pytest.raises(ConfigError, match=r"train\.jsonl:2: record longer than 0 MiB"):
        load_stream(str(user_stream(tmp_path, "{path: train.jsonl}", data)))


MEMORY_PROBE = """
import json, resource, sys
from transformers import AutoTokenizer
from clbench.data.encoding import encode_example
from clbench.data.streams import load_stream
tok = AutoTokenizer.from_pretrained(sys.argv[2], local_files_only=True)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
stream = load_stream(sys.argv[1])
encoded = [encode_example(tok, r, 64) for r in stream.tasks[1].train]
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_increase_mib": (after - before) / 1024, "lengths": [len(e.input_ids) for e in encoded],
                  "truncated": [e.truncated for e in encoded]}))
"""


def test_a_50_mb_line_costs_a_bounded_amount_of_memory(micro_base_dir, tmp_path):
    """Loading and encoding a stream with one 50 MB training record: the peak resident memory of the
    process grows by less than 400 MiB (tokenizing the whole record took 10.6 GB)."""
    with open(tmp_path / "train.jsonl", "w") as fh:
        fh.write('{"text": "a short record"}\n{"text": "')
        fh.writelines("the patient was given ten units of insulin and " * 1100 for _ in range(1000))  # 51.7 MB
        fh.write('"}\n')
    assert (tmp_path / "train.jsonl").stat().st_size > 50_000_000
    stream = user_stream(tmp_path, "{path: train.jsonl}")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(stream), str(micro_base_dir)], env=env,
                         capture_output=True, text=True, timeout=300, check=True).stdout
    got = json.loads(out.splitlines()[-1])
    assert got["lengths"][1] == 64 and got["truncated"] == [False, True]
    assert got["peak_increase_mib"] < 400, got


BUILD_PROBE = """
import json, resource, sys
from pathlib import Path
from tests.conftest import micro_config
from clbench.data.encoding import encode_example
from clbench.data.streams import load_stream
from clbench.modeling.loading import load_causal_lm
from clbench.modeling.tiny import build_base_model
cfg = micro_config(Path(sys.argv[2]), model={"pretrain_steps": 2})
stream = load_stream(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
base = build_base_model(cfg.model, stream, Path(sys.argv[2]) / "cache", progress=False)
_, tok = load_causal_lm(base, "cpu", "float32")
encoded = [encode_example(tok, r, cfg.model.max_length) for r in stream.tasks[1].train]
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_increase_mib": (after - before) / 1024, "lengths": [len(e.input_ids) for e in encoded]}))
"""


def test_the_embedded_model_is_built_from_a_50_mb_line_in_bounded_memory(tmp_path):
    """Building the embedded base model (tokenizer trained on every training text) from a stream with one
    50 MB training record, then encoding that record: the peak resident memory grows by less than 600 MiB
    (the tokenizer trainer fed the whole line took 5.5 GB)."""
    with open(tmp_path / "train.jsonl", "w") as fh:
        fh.write('{"text": "a short record"}\n{"text": "')
        fh.writelines("the patient was given ten units of insulin and " * 1100 for _ in range(1000))  # 51.7 MB
        fh.write('"}\n')
    stream = user_stream(tmp_path, "{path: train.jsonl}")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", BUILD_PROBE, str(stream), str(tmp_path)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=600, check=True).stdout
    got = json.loads(out.splitlines()[-1])
    assert got["lengths"][1] == 64
    assert got["peak_increase_mib"] < 600, got


def test_the_tokenizer_learned_from_bounded_pieces_is_the_whole_texts():
    """Cut where the byte-level pre-tokenizer splits anyway, pieces of a text teach the very tokenizer the
    whole text teaches (spaces, runs of spaces and newlines, punctuation, contractions, numbers)."""
    import random

    from clbench.modeling.tiny import bounded_pieces
    from clbench.modeling.tokenizer import train_bpe_tokenizer

    rng = random.Random(0)
    words = ["the", "patient", "was", "given", "units", "of", "insulin", "'s", "don't", "3.5", "!!", "(x)", "é"]
    text = "".join(rng.choice(words) + rng.choice([" ", "  ", "\n", "", "   ", "\n\n", " \n ", "\t"])
                   for _ in range(20000))
    texts = [text, "short one"]
    pieces = list(bounded_pieces(texts, 500))
    assert max(map(len, pieces)) <= 500 and len(pieces) > 100
    assert "".join(pieces) == "".join(texts)
    whole = train_bpe_tokenizer(texts, 300).backend_tokenizer.to_str()
    assert train_bpe_tokenizer(iter(pieces), 300).backend_tokenizer.to_str() == whole
    assert [len(p) for p in bounded_pieces(["a" * 1200], 500)] == [500, 500, 200]  # one endless word: cut anyway


def test_head_tokens_keeps_the_tokens_of_the_whole_text(micro_model):
    """A long record cut before tokenizing gives the same first max_length tokens as the whole text."""
    from clbench.data.encoding import encode_example

    _, tok = micro_model
    text = " ".join(f"word{i % 97} of the notes" for i in range(3000))  # ~60k characters
    full = tok(text)["input_ids"] + [tok.eos_token_id]
    enc = encode_example(tok, {"text": text}, 64)
    assert enc.input_ids == full[:64] and enc.truncated
    short = encode_example(tok, {"prompt": "Q: a?", "completion": "b"}, 64)
    assert not short.truncated and short.input_ids[-1] == tok.eos_token_id


def test_records_longer_than_max_length_are_counted_and_warned_about(micro_cache, micro_base_dir, tmp_path, capsys):
    rc, _, err = cli(micro_args(tmp_path / "results", micro_cache, train={"steps_per_task": 1},
                                extra=("--set", "model.max_length=8")), capsys)
    assert rc == 0, err
    metrics = json.loads(next((tmp_path / "results").rglob("metrics.json")).read_text())
    counts = metrics["truncated_records"]
    assert set(counts) == {"medical", "notes"} and all(n > 0 for n in counts.values())
    assert f"clbench: warning: {counts['medical']} training record(s) of task 'medical' are longer than " \
           "model.max_length=8 tokens and were cut to it" in err


# --- the CLI ------------------------------------------------------------------------------------


def test_a_bug_is_one_line_and_its_traceback_is_behind_debug(tmp_path, capsys, monkeypatch):
    def bug(*args, **kwargs):
        raise KeyError("boom")

    monkeypatch.setattr("clbench.run.grid.run_grid", bug)
    args = micro_args(tmp_path / "results", tmp_path / "cache")
    rc, _, err = cli(args, capsys)
    assert rc == 1
    assert err == ("clbench: internal error (a bug, please report it): KeyError: 'boom'\n"
                   "clbench: rerun with --debug for the traceback\n")
    rc, _, err = cli([*args, "--debug"], capsys)
    assert rc == 1 and err.startswith("Traceback (most recent call last):") and "KeyError: 'boom'" in err


def test_config_errors_survive_pickling():
    """A run in a worker process (``jobs > 1``) raises its ConfigError in the parent unchanged."""
    import pickle

    exc = pickle.loads(pickle.dumps(ConfigError("train.lr", "must be > 0", ["0.001"])))
    assert type(exc) is ConfigError and str(exc) == "train.lr: must be > 0 (allowed: 0.001)"


# --- model path ----------------------------------------------------------------------------------


@pytest.mark.parametrize("make", ["missing", "empty", "bad_config"])
def test_wrong_model_path_writes_nothing(make, tmp_path, capsys):
    path = tmp_path / "model"
    if make != "missing":
        path.mkdir()
    if make == "bad_config":
        (path / "config.json").write_text('{"model_type": "no-such-architecture"}')
    results = tmp_path / "results"
    err = refused(capsys, micro_args(results, tmp_path / "cache", extra=("--set", f"model.path={path}")), results)
    expected = {"missing": f"model.path: {path} is not a folder (a local Hugging Face checkpoint)",
                "empty": f"model.path: {path} is not a local Hugging Face checkpoint (no config.json)",
                "bad_config": f"model.path: cannot read the model config in {path}: ValueError: "}[make]
    assert err.startswith(f"clbench: error: {expected}")
    assert not results.exists()


# --- broken results and the report ---------------------------------------------------------------


def two_runs(tmp_path: Path) -> Path:
    R = [[0.5, 0.1, 0.1], [0.5, 0.9, 0.1], [0.4, 0.7, 0.9]]
    for seed in (0, 1):
        make_run(tmp_path / "results", "sft", seed, R)
    return tmp_path / "results"


def test_report_survives_a_corrupt_metrics_file_and_a_stray_done(tmp_path, capsys):
    results = two_runs(tmp_path)
    bad = results / "exp" / "toy" / "sft" / "seed_1"
    (bad / "metrics.json").write_text('{"suites": ')
    stray = results / "exp" / "toy" / "sft" / "seed_7"
    stray.mkdir()
    (stray / "DONE").write_bytes(b"")
    rc, _, err = cli(["report", str(results), "-o", str(tmp_path / "rep"), "--no-figures"], capsys)
    assert rc == 0, err
    lines = [f"unreadable: {bad}: metrics.json:1: corrupt JSON: Expecting value",
             f"unreadable: {stray}: missing config.json"]
    assert err.splitlines()[:2] == [f"clbench: left out of the report: {line}" for line in lines]
    readme = (tmp_path / "rep" / "README.md").read_text()
    assert "## Runs left out" in readme and all(f"- `{line}`" in readme for line in lines)
    numbers = json.loads((tmp_path / "rep" / "toy" / "numbers.json").read_text())
    acc = next(c for c in numbers["tables"]["summary"] if c["column"] == "acc" and c["strategy"] == "sft")
    assert acc["n"] == 1 and list(acc["seeds"]) == ["0"]  # the readable run alone
    strict = refused(capsys, ["report", str(results), "-o", str(tmp_path / "strict"), "--strict"], tmp_path / "strict")
    assert strict == (f"clbench: error: {results}: --strict: runs that cannot be reported:\n  "
                      + "\n  ".join(lines) + "\n")


def test_unfinished_runs_are_listed_with_their_last_finished_task(tmp_path, capsys):
    results = two_runs(tmp_path)
    run = results / "exp" / "toy" / "sft" / "seed_1"
    (run / "DONE").unlink()
    (run / "eval" / "after_2.json").unlink()
    rc, _, err = cli(["report", str(results), "-o", str(tmp_path / "rep"), "--no-figures"], capsys)
    assert rc == 0, err
    line = f"unfinished: {run}: last finished task 'medical' (2 of 3)"
    assert f"clbench: left out of the report: {line}" in err
    assert f"- `{line}`" in (tmp_path / "rep" / "README.md").read_text()
    err = refused(capsys, ["report", str(results), "-o", str(tmp_path / "s"), "--strict"], tmp_path / "s")
    assert line in err


# --- checkpoints ---------------------------------------------------------------------------------


class Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_refused_without_advice_to_unpickle(micro_cache, micro_base_dir, tmp_path, capsys):
    import torch

    args = micro_args(tmp_path / "results", micro_cache, train={"steps_per_task": 1})
    assert cli(args, capsys)[0] == 0
    run = next((tmp_path / "results").rglob("seed_0"))
    (run / "DONE").unlink()
    (run / "eval" / "after_2.json").unlink()  # resume from task 1's checkpoint
    marker = tmp_path / "pwned"
    ckpt = run / "checkpoints" / "task_1"
    torch.save({"strategy": Evil(marker)}, ckpt / "strategy_state.pt")
    (ckpt / "checksums.json").unlink()  # a forged checkpoint carries no checksum of the real one (tests/test_integrity.py)
    err = refused(capsys, args, tmp_path / "results")
    assert err.startswith(f"clbench: error: {run / 'checkpoints' / 'task_1'}: cannot resume from this checkpoint "
                          "(UnpicklingError: Trying to load unsupported GLOBAL posix.system whose module posix "
                          "is blocked.). clbench loads checkpoints")
    assert "weights_only=False" not in err and "weights_only=True" in err
    assert not marker.exists()
    (run / "checkpoints" / "task_1" / "adapter.safetensors").write_bytes(b"not a safetensors file")
    err = refused(capsys, args, tmp_path / "results")
    assert err.startswith(f"clbench: error: {run / 'checkpoints' / 'task_1'}: cannot resume from this checkpoint "
                          "(SafetensorError: ")


# --- code in stream files ------------------------------------------------------------------------


def evil_stream(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The micro stream plus an lm-eval suite whose task YAML has ``process_docs: !function evil.docs``;
    importing ``evil.py`` writes a marker file. Returns (stream, task YAML, marker)."""
    folder = tmp_path / "lm"
    shutil.copytree(SHIPPED / "data", folder / "data")
    marker = tmp_path / "evil_ran"
    (folder / "evil.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
                                    "def docs(dataset):\n    return dataset\n")
    yaml_text = (SHIPPED / "clbench_general_mc.yaml").read_text().replace(
        "output_type: multiple_choice\n", "output_type: multiple_choice\nprocess_docs: !function evil.docs\n")
    task_yaml = folder / "clbench_general_mc.yaml"
    task_yaml.write_text(yaml_text)
    text = (ROOT / "tasks" / "micro.yaml").read_text()
    general = "    generated: {domain: general, entities: 4}\n"
    probe = f"      - {{name: mc_lm, kind: lm_eval, task: clbench_general_mc, include_path: {folder}, metric: acc}}\n"
    stream = tmp_path / "evil.yaml"
    stream.write_text(text.replace(general, general + "    probes:\n" + probe, 1))
    return stream, task_yaml, marker


def test_function_tag_in_task_yaml_does_not_run_unless_allowed(tmp_path, capsys):
    from clbench.config.experiment import load_config
    from clbench.run.grid import plan

    stream, task_yaml, marker = evil_stream(tmp_path)
    line = task_yaml.read_text().splitlines().index("process_docs: !function evil.docs") + 1
    results = tmp_path / "results"
    err = refused(capsys, micro_args(results, tmp_path / "cache", stream=str(stream)), results)
    assert err == (f"clbench: error: {task_yaml}:{line}: '!function evil.docs' would run Python code when the "
                   f"stream is loaded (lm-eval task 'clbench_general_mc', {stream}.tasks[0].probes[0].task); a "
                   "stream runs no code unless you pass --allow-code or the stream file sets allow_code: true\n")
    assert not marker.exists()
    loaded, _ = plan(load_config(None, [f"stream={stream}", "strategies=[sft]", "allow_code=true"]))
    assert marker.read_text() == "ran" and loaded.code_allowed


def test_a_group_member_with_a_function_tag_is_found(tmp_path):
    from clbench.data.lm_eval_tasks import task_manager
    from clbench.data.task_code import refuse_code

    _, task_yaml, marker = evil_stream(tmp_path)
    (task_yaml.parent / "group.yaml").write_text("group: my_group\ntask:\n  - clbench_general_mc\n"
                                                 "aggregate_metric_list:\n  - {metric: acc}\n")
    index = task_manager(str(task_yaml.parent)).task_index
    with pytest.raises(ConfigError, match=r"clbench_general_mc\.yaml:\d+: '!function evil\.docs'"):
        refuse_code(index, "my_group", "probes[0].task")
    assert not marker.exists()


def test_a_function_tag_behind_a_single_string_include_is_found(tmp_path):
    """lm-eval's ``include:`` may name one file as a plain string: the file it names is read for tags too."""
    from clbench.data.task_code import function_tags

    (tmp_path / "base.yaml").write_text("output_type: multiple_choice\nprocess_docs: !function evil.docs\n")
    (tmp_path / "task.yaml").write_text("include: base.yaml\ntask: my_task\n")
    (tmp_path / "listed.yaml").write_text("include: [base.yaml]\ntask: other\n")
    for name in ("task.yaml", "listed.yaml"):
        assert function_tags(tmp_path / name) == [(str(tmp_path / "base.yaml"), 2, "evil.docs")], name


def test_prompt_templates_cannot_reach_python(tmp_path):
    from jinja2.exceptions import SecurityError
    from lm_eval import utils

    from clbench.data.task_code import sandbox_templates

    sandbox_templates()
    marker = tmp_path / "template_ran"
    assert utils.apply_template("{{ a }} and {{ b | upper }}", {"a": "x", "b": "y"}) == "x and Y"
    with pytest.raises(SecurityError):
        utils.apply_template("{{ cycler.__init__.__globals__.os.system('touch " + str(marker) + "') }}", {})
    assert not marker.exists()


# --- file modes ----------------------------------------------------------------------------------


def test_result_files_follow_the_umask(tmp_path):
    from clbench.results.files import atomic_write_json

    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        os.umask(0o027)
        atomic_write_json(tmp_path / "b.json", {"x": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o640
