"""A user's local Hugging Face checkpoint as the base model: loading, device/dtype, LoRA targets, chat
template, the reference model, and full runs of sft and layer_tiers on two architectures.

The checkpoints (Llama- and Qwen2-shaped, hidden 48, 2 layers) are saved with ``save_pretrained`` by
``tests/checkpoint_helpers.py``, exactly as a user's would be.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from clbench.errors import ConfigError
from clbench.modeling.loading import load_causal_lm, pick_device, pick_dtype, reference_model
from clbench.modeling.lora import add_lora
from tests.checkpoint_helpers import LAYERS, make_checkpoint, without_pad
from tests.conftest import micro_config

PROJECTIONS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
TWO_TASKS = """name: two-task
primary_metric: qa
tasks:
  - {name: medical, generated: {domain: medical, entities: 2}}
  - {name: notes, generated: {domain: notes, entities: 2}}
"""


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    return {arch: make_checkpoint(root / arch, arch) for arch in ("llama", "qwen2")}


def test_device_auto_prefers_cuda_and_can_be_overridden():
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert pick_device("cuda").type == "cuda"
    else:
        with pytest.raises(ConfigError, match=r"model\.device: 'cuda' requested but CUDA is not available"):
            pick_device("cuda")
    with pytest.raises(ConfigError, match=r"model\.device: unknown device 'gpu' \(allowed: "):
        pick_device("gpu")


def test_dtype_auto_is_bf16_on_cuda_and_fp32_on_cpu():
    assert pick_dtype("auto", torch.device("cuda")) is torch.bfloat16
    assert pick_dtype("auto", torch.device("cpu")) is torch.float32
    assert pick_dtype("float16", torch.device("cpu")) is torch.float16


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_load_on_cpu_keeps_the_saved_weights(checkpoints, arch):
    model, tok = load_causal_lm(checkpoints[arch], "cpu", "auto")
    saved = load_file(checkpoints[arch] / "model.safetensors")
    params = dict(model.named_parameters())
    assert {p.device.type for p in params.values()} == {"cpu"}
    assert {p.dtype for p in params.values()} == {torch.float32}
    assert all(torch.equal(params[k], v) for k, v in saved.items() if k in params)
    assert tok.pad_token_id is not None and len(tok) <= model.get_input_embeddings().num_embeddings
    half, _ = load_causal_lm(checkpoints[arch], "cpu", "bfloat16")
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    if torch.cuda.is_available():  # the GPU path: auto = bf16 on the first CUDA device
        gpu, _ = load_causal_lm(checkpoints[arch], "auto", "auto")
        assert {(p.device.type, p.dtype) for p in gpu.parameters()} == {("cuda", torch.bfloat16)}


def test_missing_pad_token_falls_back_to_eos(checkpoints, tmp_path):
    _, tok = load_causal_lm(without_pad(checkpoints["llama"], tmp_path / "nopad"), "cpu")
    assert tok.pad_token == tok.eos_token == "</s>"


def test_custom_model_code_does_not_run_unless_trusted(checkpoints, tmp_path):
    folder = tmp_path / "remote"
    folder.mkdir()
    for f in checkpoints["llama"].glob("tokenizer*"):
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "config.json").write_text(json.dumps({
        "model_type": "clbench_remote", "architectures": ["RemoteModel"],
        "auto_map": {"AutoConfig": "configuration_remote.RemoteConfig",
                     "AutoModelForCausalLM": "configuration_remote.RemoteModel"}}))
    (folder / "configuration_remote.py").write_text(
        "import pathlib\npathlib.Path(__file__).with_name('EXECUTED').write_text('ran')\n")
    with pytest.raises(ConfigError, match=r"model\.trust_remote_code: .* ships its own model code"):
        load_causal_lm(folder, "cpu")
    assert not (folder / "EXECUTED").exists()


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_lora_default_targets_every_projection_and_not_the_head(checkpoints, arch):
    model, _ = load_causal_lm(checkpoints[arch], "cpu")
    wrapped = add_lora(model, r=4, alpha=8)
    adapted = {n.split(".lora_A")[0] for n, _ in wrapped.named_parameters() if ".lora_A." in n}
    expected = {f"base_model.model.model.layers.{i}.{'self_attn' if p[0] in 'qkvo' else 'mlp'}.{p}"
                for i in range(LAYERS) for p in PROJECTIONS}
    assert adapted == expected
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("lm_head" in n or "embed_tokens" in n for n in trainable)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_reference_model_is_a_fresh_init_of_the_same_architecture(checkpoints, arch):
    model, _ = load_causal_lm(checkpoints[arch], "cpu")
    ref = reference_model(checkpoints[arch], seed=7, device=torch.device("cpu"), dtype=torch.float32)
    again = reference_model(checkpoints[arch], seed=7, device=torch.device("cpu"), dtype=torch.float32)
    assert type(ref) is type(model)
    shapes = {n: p.shape for n, p in model.named_parameters()}
    assert {n: p.shape for n, p in ref.named_parameters()} == shapes
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(dict(ref.named_parameters())[q], dict(model.named_parameters())[q])
    assert torch.equal(dict(ref.named_parameters())[q], dict(again.named_parameters())[q])


def test_chat_template_wraps_prompts_once_and_leaves_documents(checkpoints, micro_stream):
    from clbench.modeling.chat import chat_prompt, chat_stream

    _, qwen = load_causal_lm(checkpoints["qwen2"], "cpu")
    _, llama = load_causal_lm(checkpoints["llama"], "cpu")
    q = "Question: Who?\nAnswer:"
    assert chat_prompt(qwen, q) == f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
    # the Llama-style template writes BOS itself and the tokenizer adds one: exactly one BOS remains
    assert chat_prompt(llama, q) == f"[user] {q}\n[assistant] "
    ids = llama(chat_prompt(llama, q))["input_ids"]
    assert ids.count(llama.bos_token_id) == 1 and ids[0] == llama.bos_token_id

    wrapped = chat_stream(micro_stream, qwen)
    for before, after in zip(micro_stream.tasks, wrapped.tasks):
        for r0, r1 in zip(before.train, after.train):
            assert r1 == ({**r0, "prompt": chat_prompt(qwen, r0["prompt"])} if "prompt" in r0 else r0)
        for s0, s1 in zip(before.probes, after.probes):
            if s0.kind == "perplexity":
                assert s1.items == s0.items
            else:
                assert [i["prompt"] for i in s1.items] == [chat_prompt(qwen, i["prompt"]) for i in s0.items]
                assert [i.get("answer", i.get("choices")) for i in s1.items] == \
                       [i.get("answer", i.get("choices")) for i in s0.items]

    from clbench.modeling.tokenizer import train_bpe_tokenizer  # the embedded model's: no chat template

    with pytest.raises(ConfigError, match=r"model\.use_chat_template: .* has no chat template"):
        chat_prompt(train_bpe_tokenizer(["some text"], 270), q)


@pytest.mark.parametrize("arch,chat", [("llama", False), ("qwen2", True)])
def test_sft_and_layer_tiers_run_a_two_task_stream_on_a_user_checkpoint(checkpoints, tmp_path, arch, chat):
    from clbench.run.grid import run_grid

    stream = tmp_path / "two_task.yaml"
    stream.write_text(TWO_TASKS)
    tiers = "{name: layer_tiers, options: {frequencies: [1, 2]}}"  # two blocks: two tiers
    cfg = micro_config(tmp_path, stream=str(stream), strategies=f"[sft, {tiers}]",
                       model={"path": str(checkpoints[arch]), "use_chat_template": chat},
                       train={"steps_per_task": 4})
    results = run_grid(cfg, progress=False, echo=lambda *a: None)
    assert [status for _, status in results] == ["done", "done"]
    for run, _ in results:
        assert (run / "DONE").exists()
        record = json.loads((run / "config.json").read_text())
        assert record["model"]["path"] == str(checkpoints[arch]) and record["model"]["use_chat_template"] is chat
        # the embedded model's fields (micro_config sets hidden_size 32, ...) were ignored, so not recorded
        assert not {"hidden_size", "num_layers", "vocab_size", "pretrain_steps"} & set(record["model"])
        matrix = json.loads((run / "matrix.json").read_text())
        assert set(matrix["suites"]) == {"qa", "mc", "ppl"}
        for suite in matrix["suites"].values():
            assert len(suite["R"]) == 2 and all(len(row) == 2 for row in suite["R"])
            assert all(isinstance(x, float) for row in suite["R"] for x in row)
            assert all(isinstance(x, float) for x in suite["reference"] + suite["base"])
        # the reference row is a random model of this architecture, not the checkpoint itself
        ref, base = (json.loads((run / "eval" / f"{k}.json").read_text())["scores"] for k in ("reference", "base"))
        assert ref["medical"]["ppl"] != base["medical"]["ppl"]
        # adapters on every projection of every block, nothing on the head or the embeddings
        adapter = load_file(run / "checkpoints" / "task_0" / "adapter.safetensors")
        modules = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in adapter}
        assert modules == PROJECTIONS
        assert {int(k.split("layers.")[1].split(".")[0]) for k in adapter} == set(range(LAYERS))
        log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
        assert len(log) == 2 * 4  # steps_per_task x tasks, every step logged
        assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
    # layer_tiers really skipped its slow tier: fewer parameter updates than sft in the same steps
    cost = [json.loads((run / "metrics.json").read_text())["cost"] for run, _ in results]
    assert cost[1]["updated_elements"] < cost[0]["updated_elements"]
    assert cost[1]["optimizer_steps"] == cost[0]["optimizer_steps"] == 8
