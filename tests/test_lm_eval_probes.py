"""lm-eval tasks as probe suites: the in-memory model wrapper against lm-eval's own HFLM, the shipped
general-ability tasks, agreement with the native scorers, a full micro run, and bad suite specs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from clbench.data.streams import load_stream
from clbench.errors import ConfigError
from tests.checkpoint_helpers import make_checkpoint
from tests.conftest import micro_config

SHIPPED = Path(__file__).resolve().parent.parent / "tasks" / "lm_eval"
PPL = "word_perplexity"
CTX = "Question: What is the capital of Naibraithia?\nAnswer:"


def req(kind, args):
    from lm_eval.api.instance import Instance

    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    """A Qwen2-shaped checkpoint: no BOS, so lm-eval's HFLM scores rolling text exactly as clbench does."""
    from clbench.modeling.loading import load_causal_lm

    model, tok = load_causal_lm(make_checkpoint(tmp_path_factory.mktemp("qwen") / "ck", "qwen2"), "cpu")
    return model.eval(), tok


def hflm(model, tok):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tok, batch_size=16, device="cpu")


def mc_stream(tmp_path) -> str:
    """The micro stream plus the shipped general suites, natively and through lm-eval, on the same items."""
    data = SHIPPED / "data"
    path = tmp_path / "micro_lmeval.yaml"
    text = (Path(__file__).resolve().parent.parent / "tasks" / "micro.yaml").read_text()
    probes = [f"{{name: mc_native, kind: multiple_choice, path: {data / 'general_mc.jsonl'}}}",
              f"{{name: qa_native, kind: exact_match, path: {data / 'general_qa.jsonl'}}}",
              f"{{name: mc_lm, kind: lm_eval, task: clbench_general_mc, include_path: {SHIPPED}, metric: acc}}",
              f"{{name: qa_lm, kind: lm_eval, task: clbench_general_qa, include_path: {SHIPPED}, metric: exact_match}}",
              f"{{name: ppl_lm, kind: lm_eval, task: clbench_general_ppl, include_path: {SHIPPED}, metric: {PPL}}}"]
    general = "    generated: {domain: general, entities: 4}\n"
    assert general in text
    text = text.replace(general, general + "    probes:\n" + "".join(f"      - {p}\n" for p in probes))
    path.write_text(text)
    return str(path)


def test_shipped_data_is_what_the_generator_writes():
    from clbench.tasks.lm_eval.generate import DATA_DIR, records, render

    for name, recs in records().items():
        assert (DATA_DIR / name).read_text(encoding="utf-8") == render(recs), f"regenerate {name}"
        assert len(recs) == 120


def test_loglikelihood_and_generation_equal_lm_evals_hflm(micro_model):
    from clbench.eval.lm_eval_suite import ClbenchLM

    model, tok = micro_model
    model.eval()
    ours, ref = ClbenchLM(model, tok, batch_size=4), hflm(model, tok)
    (greedy,) = ours.generate_until([req("generate_until", (CTX, {"until": ["\n"], "max_gen_toks": 6}))])
    ll = [req("loglikelihood", (CTX, " Nilo")), req("loglikelihood", ("", "The capital is")),
          req("loglikelihood", ("The capital of ", "Nilo is")), req("loglikelihood", (CTX, greedy))]
    got, want = ours.loglikelihood(ll), ref.loglikelihood(ll)
    for (a, ga), (b, gb) in zip(got, want):
        assert a == pytest.approx(b, abs=1e-5) and ga == gb
    assert got[3][1] is True and got[0][1] is False  # the model's own greedy answer is greedy
    gen = [req("generate_until", (CTX, {"until": ["\n"], "max_gen_toks": 12})),
           req("generate_until", ("The capital of", {"until": ["a"], "max_gen_toks": 20})),
           req("generate_until", ("Naibraithia", {"until": [".", "is"], "max_gen_toks": 30, "do_sample": False}))]
    assert ours.generate_until(gen) == ref.generate_until(gen)


def test_generation_stops_before_the_first_stop_sequence(micro_model):
    from clbench.eval.lm_eval_suite import ClbenchLM

    model, tok = micro_model
    lm = ClbenchLM(model.eval(), tok, batch_size=8)
    prompts = [CTX, "The capital of", "People in"]
    free = lm.generate_until([req("generate_until", (p, {"until": [], "max_gen_toks": 16})) for p in prompts])
    # stop strings taken from inside each free continuation (multi-character, so several tokens long)
    stops = [f[len(f) // 2: len(f) // 2 + 2] for f in free]
    assert all(len(s) == 2 for s in stops)
    mixed = [req("generate_until", (p, {"until": [s], "max_gen_toks": 16})) for p, s in zip(prompts, stops)]
    cut = lm.generate_until(mixed)  # three different until lists: three batches, answers back in order
    assert cut == [f[: f.index(s)] for f, s in zip(free, stops)]
    assert all(len(c) < len(f) for c, f in zip(cut, free))


def test_rolling_loglikelihood_equals_hflm_without_bos_and_native_nll_with_it(qwen, micro_model):
    from clbench.eval.lm_eval_suite import ClbenchLM
    from clbench.eval.torch_lm import TorchLM

    long = " ".join(json.loads(x)["text"] for x in (SHIPPED / "data" / "general_ppl.jsonl").read_text().splitlines())
    texts = ["Naibraithia has its capital at Nilo.", long[:1500]]  # ~450 tokens: 15 windows of 32
    model, tok = qwen
    ours = ClbenchLM(model, tok, batch_size=4, max_length=32)  # the long text needs several windows
    rolling = [req("loglikelihood_rolling", (t,)) for t in texts]
    ref = hflm(model, tok)
    ref._max_length = 32
    assert ours.loglikelihood_rolling(rolling) == pytest.approx(ref.loglikelihood_rolling(rolling), abs=1e-4)
    # with a BOS-adding tokenizer: log p(text | BOS) = -(native NLL of text + EOS) - log p(EOS | BOS text);
    # lm-eval's HFLM would also score a second BOS here (lm-evaluation-harness issue #3333)
    model, tok = micro_model
    ours = ClbenchLM(model.eval(), tok, batch_size=4)
    with TorchLM(model, tok) as view:
        nll = [n for n, _ in view.token_nll(texts[:1])]
        eos = view.loglikelihood([(texts[0], tok.eos_token)])
    assert ours.loglikelihood_rolling(rolling[:1])[0] == pytest.approx(-nll[0] - eos[0], abs=1e-4)


def test_native_mc_and_exact_match_agree_with_lm_eval_on_the_shipped_items(micro_model, tmp_path, monkeypatch):
    """lm-eval is the reference: its acc (with its own HFLM and with clbench's model) is the native score."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from clbench.eval.probes import score_suite
    from clbench.eval.torch_lm import TorchLM

    monkeypatch.chdir(tmp_path)  # data files resolve next to the task YAML, not the working directory
    stream = load_stream(mc_stream(tmp_path))
    suites = {s.name: s for s in stream.tasks[0].probes}
    model, tok = micro_model
    with TorchLM(model, tok) as view:
        native_mc, lm_mc = score_suite(suites["mc_native"], view), score_suite(suites["mc_lm"], view)
        native_qa, lm_qa = score_suite(suites["qa_native"], view), score_suite(suites["qa_lm"], view)
        monkeypatch.chdir(SHIPPED)  # plain lm-eval reads data_files relative to the working directory
        out = lm_eval.simple_evaluate(model=hflm(model, tok), tasks=["clbench_general_mc"], bootstrap_iters=0,
                                      task_manager=TaskManager(include_path=str(SHIPPED), include_defaults=False))
    assert 0 < native_mc.score < 1 and native_mc.n == lm_mc.n == 120
    assert lm_mc.score == native_mc.score == out["results"]["clbench_general_mc"]["acc,none"]
    by_doc = sorted(lm_mc.items, key=lambda s: s["doc_id"])
    assert [s["doc"]["id"] for s in by_doc] == [i["id"] for i in native_mc.items]
    assert [bool(s["acc"]) for s in by_doc] == [i["correct"] for i in native_mc.items]
    for s, i in zip(by_doc, native_mc.items):
        assert [r[0] for r in s["filtered_resps"]] == pytest.approx(i["scores"], rel=1e-6, abs=1e-5)  # float32 rounding
    qa_by_doc = sorted(lm_qa.items, key=lambda s: s["doc_id"])
    assert [s["filtered_resps"][0] for s in qa_by_doc] == [i["prediction"] for i in native_qa.items]
    assert lm_qa.score == native_qa.score


def test_micro_run_puts_lm_eval_scores_in_the_matrix(micro_cache, micro_base_dir, tmp_path):
    from clbench.run.grid import run_grid

    cfg = micro_config(tmp_path, cache_dir=micro_cache, stream=mc_stream(tmp_path), strategies="[sft]")
    ((run, status),) = run_grid(cfg, progress=False, echo=lambda *a: None)
    assert status == "done" and (run / "DONE").exists()
    suites = json.loads((run / "matrix.json").read_text())["suites"]
    for native, lm in (("mc_native", "mc_lm"), ("qa_native", "qa_lm")):
        assert suites[lm]["kind"] == "lm_eval" and suites[lm]["higher_is_better"] is True
        for row in ("R", "base", "reference"):  # every model of the run: reference, base, after each task
            assert suites[lm][row] == suites[native][row]
    assert suites["ppl_lm"]["higher_is_better"] is False
    assert all(x > 1 for x in suites["ppl_lm"]["R"][-1][:1])  # word perplexity of the general task
    assert suites["mc_lm"]["R"][1][1:] == [None, None]  # the suite belongs to the general task only
    samples = [json.loads(x) for x in (run / "predictions" / "after_2" / "general.mc_lm.jsonl").read_text().splitlines()]
    assert len(samples) == 120 and {"doc", "arguments", "resps", "filtered_resps", "acc"} <= set(samples[0])
    metrics = json.loads((run / "metrics.json").read_text())["suites"]
    assert metrics["mc_lm"]["general_retention"] == metrics["mc_native"]["general_retention"]


def test_chat_template_reaches_lm_eval_requests(qwen):
    from clbench.eval.probes import score_suite
    from clbench.eval.torch_lm import TorchLM
    from clbench.modeling.chat import chat_stream

    stream = load_stream(str(SHIPPED.parent / "general_lmeval.yaml"))
    model, tok = qwen
    general = chat_stream(stream, tok).tasks[0]
    suite = next(s for s in general.probes if s.name == "gen_mc")
    suite = type(suite)(suite.name, suite.kind, (), {**suite.config, "limit": 3})
    with TorchLM(model, tok) as view:
        res = score_suite(suite, view)
    contexts = [a[0] for s in res.items for a in s["arguments"]]
    assert len(contexts) == 12 and all(c.startswith("<|im_start|>user\nQuestion: ") for c in contexts)
    assert all(c.endswith("<|im_start|>assistant\n") for c in contexts)


def _suite_error(tmp_path, probe: str) -> str:
    if not (tmp_path / "lm_tasks").exists():
        shutil.copytree(SHIPPED, tmp_path / "lm_tasks", ignore=shutil.ignore_patterns("__pycache__"))
    path = tmp_path / "s.yaml"
    path.write_text(f"name: s\nprimary_metric: qa\ntasks:\n  - name: g\n    pretrained: true\n"
                    f"    generated: {{domain: general, entities: 2}}\n    probes: [{probe}]\n")
    with pytest.raises(ConfigError) as exc:
        load_stream(str(path))
    return str(exc.value)


def test_bad_lm_eval_suites_fail_at_stream_load_naming_the_field(tmp_path):
    base = "name: x, kind: lm_eval, include_path: lm_tasks"
    msg = _suite_error(tmp_path, f"{{{base}, task: clbench_general_mc, metrics: acc}}")
    assert "probes[0]: unknown key 'metrics' — did you mean 'metric'?" in msg
    assert "(allowed: filter, include_path, kind, limit, metric, name, num_fewshot, task)" in msg
    msg = _suite_error(tmp_path, f"{{{base}, task: clbench_general_mcq}}")
    assert "probes[0].task: no lm-eval task 'clbench_general_mcq' — did you mean 'clbench_general_mc'?" in msg
    assert "(allowed: clbench_general, clbench_general_mc, clbench_general_ppl, clbench_general_qa)" in msg
    msg = _suite_error(tmp_path, f"{{{base}, task: clbench_general_mc, metric: exact_match}}")
    assert msg.endswith("probes[0].metric: task 'clbench_general_mc' has no metric 'exact_match' (allowed: acc, acc_norm)")
    msg = _suite_error(tmp_path, f"{{{base}, task: clbench_general_mc, filter: strict}}")
    assert msg.endswith("probes[0].filter: task 'clbench_general_mc' has no filter 'strict' (allowed: none)")
    msg = _suite_error(tmp_path, f"{{{base}, task: clbench_general}}")
    assert "probes[0].task: 'clbench_general' is a tag" in msg
    msg = _suite_error(tmp_path, "{name: x, kind: lm_eval, task: clbench_general_mc, include_path: nowhere}")
    assert "probes[0].include_path: " in msg and "nowhere is not a folder" in msg
    (tmp_path / "lm_tasks" / "data" / "general_mc.jsonl").unlink()
    msg = _suite_error(tmp_path, f"{{{base}, task: clbench_general_mc}}")
    assert "probes[0].task: lm-eval could not load 'clbench_general_mc'" in msg


def test_results_are_keyed_by_task_file_content(tmp_path):
    from clbench.data.lm_eval_tasks import _digest

    folder = tmp_path / "t"
    shutil.copytree(SHIPPED, folder, ignore=shutil.ignore_patterns("__pycache__"))
    before = _digest(str(folder), "clbench_general_mc")
    assert before == _digest(str(SHIPPED), "clbench_general_mc")  # same files, another place: same digest
    data = folder / "data" / "general_mc.jsonl"
    data.write_text(data.read_text().replace("Nilo", "Nilu", 1))
    assert _digest(str(folder), "clbench_general_mc") != before
