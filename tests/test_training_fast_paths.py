"""The three ways a torch training step was made cheaper without changing what it computes:
frozen weights cast once per task under autocast (``clbench.modeling.frozen_cast``), the output layer at
labelled positions only (``clbench.modeling.lm_loss``), and the attention kernel of the step
(``train.attention_kernel``)."""

import json
import shutil

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from clbench.backends.torch_backend import TorchBackend
from clbench.errors import ConfigError
from clbench.modeling.frozen_cast import frozen_weights_cast
from clbench.modeling.lm_loss import causal_lm_loss
from clbench.modeling.lora import add_lora
from clbench.run.grid import run_grid
from clbench.train.types import LossOutput
from tests.conftest import micro_config

QUIET = {"progress": False, "echo": lambda *a: None}


def tied_lora_llama(seed: int = 0):
    """A microscopic Llama with tied input/output embeddings and LoRA on every linear layer."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)
    model = add_lora(LlamaForCausalLM(cfg), r=4, alpha=8)
    for n, p in model.named_parameters():  # non-zero B, so the adapters change the output
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)
    return model


def qa_batch(seed: int = 0):
    """Two rows: a prompt whose answer alone is labelled, and a shorter row padded at the end."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 97, (2, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    labels = ids.clone()
    labels[0, :7] = -100          # row 0 trains its last 5 tokens
    labels[1, :4] = -100          # row 1 trains tokens 4..8
    labels[1, 9:] = -100          # and not its padding
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def step(model, batch, autocast):
    """Loss and LoRA gradients of one forward/backward pass, in ``torch.autocast(bf16)`` when asked."""
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = causal_lm_loss(model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# --- frozen weights cast once -------------------------------------------------------------------------
def test_frozen_linear_weights_are_bf16_inside_and_the_very_same_float32_tensors_after():
    model = tied_lora_llama()
    base = model.get_base_model()
    embed, head = base.model.embed_tokens, base.lm_head
    before = {n: (p, p.detach().clone()) for n, p in model.named_parameters()}
    q_proj = base.model.layers[0].self_attn.q_proj.base_layer
    with frozen_weights_cast(model, torch.bfloat16) as cast:
        assert cast == 2 * 7 + 1  # 7 frozen linears a block, and the output layer
        assert q_proj.weight.dtype == torch.bfloat16
        assert head.weight.dtype == torch.bfloat16 and head.weight is not embed.weight  # untied for the task
        assert embed.weight.dtype == torch.float32  # the lookup feeds the float32 residual stream
        assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if p.requires_grad)
        assert all(torch.equal(q_proj.weight, before[n][1].to(torch.bfloat16))
                   for n in before if n.endswith("layers.0.self_attn.q_proj.base_layer.weight"))
    assert head.weight is embed.weight  # tied again
    for n, p in model.named_parameters():
        original, value = before[n]
        assert p is original, n
        assert p.dtype == torch.float32 and torch.equal(p, value), n  # the float32 values, bit for bit


def test_the_weights_come_back_when_the_task_fails():
    model = tied_lora_llama()
    head = model.get_base_model().lm_head
    with pytest.raises(RuntimeError), frozen_weights_cast(model, torch.bfloat16):
        raise RuntimeError("a step failed")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert head.weight is model.get_base_model().model.embed_tokens.weight


def test_without_autocast_or_with_every_weight_trained_nothing_is_cast():
    model = tied_lora_llama()
    with frozen_weights_cast(model, None) as cast:
        assert cast == 0 and all(p.dtype == torch.float32 for p in model.parameters())
    full = LlamaForCausalLM(model.get_base_model().config)  # full fine-tuning: every weight requires grad
    with frozen_weights_cast(full, torch.bfloat16) as cast:
        assert cast == 0 and all(p.dtype == torch.float32 for p in full.parameters())


def test_a_bf16_step_on_weights_cast_once_is_bitwise_the_step_autocast_computes():
    batch = qa_batch()
    model = tied_lora_llama()
    loss, grads = step(model, batch, autocast=True)
    with frozen_weights_cast(model, torch.bfloat16):
        cast_loss, cast_grads = step(model, batch, autocast=True)
        cast_loss2, _ = step(model, batch, autocast=True)  # and again: the cast is reused, not redone wrong
    assert torch.equal(loss, cast_loss) and torch.equal(loss, cast_loss2)
    assert grads.keys() == cast_grads.keys() and len(grads) == 2 * 2 * 7
    assert all(torch.equal(grads[n], cast_grads[n]) for n in grads)
    assert all(g.dtype == torch.float32 for g in cast_grads.values())


def test_a_bf16_run_trains_on_cast_weights_and_gives_the_same_matrix_as_without(tmp_path, micro_cache, micro_stream,
                                                                                micro_base_dir, monkeypatch):
    import contextlib

    from clbench.modeling import frozen_cast

    cache = tmp_path / "cache"
    shutil.copytree(micro_base_dir, cache / micro_base_dir.relative_to(micro_cache))
    calls = []
    real = frozen_cast.frozen_weights_cast

    def counting(model, dtype, keep=(), trainable_too=False):
        keep = list(keep)
        calls.append((dtype, len(keep), trainable_too))
        return real(model, dtype, keep, trainable_too)

    matrices = {}
    for name, patch in (("cast", counting), ("plain", lambda *a, **k: contextlib.nullcontext(0))):
        monkeypatch.setattr(frozen_cast, "frozen_weights_cast", patch)  # plain: nothing cast anywhere
        cfg = micro_config(tmp_path, cache_dir=cache, name=name, model={"autocast": "bfloat16"})  # sft, LoRA
        ((run, _),) = run_grid(cfg, **QUIET)
        matrices[name] = json.loads((run / "matrix.json").read_text())
    trained = sum(not t.pretrained for t in micro_stream.tasks)
    # in the first run, three phases of each trained task held the cast, keeping the LoRA weights out of it:
    # its training, its after_task hook, the evaluation row after it and the row's KL pass (their views, which
    # would cast trainable weights too), and the base/reference rows' and the base KL distributions' views,
    # nothing kept
    lora = 2 * 2 * 7  # micro Llama: 2 layers x 7 linear layers x (A, B)
    with_lora = [c for c in calls if c[1]]
    assert trained >= 2 and with_lora == [(torch.bfloat16, lora, False), (torch.bfloat16, lora, False),
                                          (torch.bfloat16, lora, True), (torch.bfloat16, lora, True)] * trained
    assert all(c == (torch.bfloat16, 0, True) for c in calls if not c[1])  # base/reference rows' views
    assert matrices["cast"] == matrices["plain"]


def test_weights_in_keep_stay_float32_and_a_frozen_weight_written_while_cast_is_an_error():
    model = tied_lora_llama()
    attn = model.base_model.model.model.layers[0].self_attn
    q, k = attn.q_proj.base_layer.weight, attn.k_proj.base_layer.weight
    q_before = q.detach().clone()
    with frozen_weights_cast(model, torch.bfloat16, keep=[k]) as n:
        assert q.dtype == torch.bfloat16 and k.dtype == torch.float32
        assert n == 2 * 7 + 1 - 1  # every frozen Linear (7 a layer, the tied head) but the kept one
    written = r"written in place.*layers\.0\.self_attn\.q_proj\.base_layer\.weight"
    with pytest.raises(RuntimeError, match=written), frozen_weights_cast(model, torch.bfloat16), torch.no_grad():
        q.add_(1.0)  # lands in the bf16 copy, which the end of the phase throws away
    assert q.dtype == torch.float32 and torch.equal(q, q_before)  # restored (the write is lost: hence the error)


@pytest.mark.parametrize("test_time", [False, True])
def test_a_bf16_run_of_the_local_cms_memory_keeps_what_its_rule_wrote(tmp_path, micro_cache, micro_base_dir, test_time):
    """The local rule changes memory weights that never require a gradient: held in bf16 for the task, its
    updates would be thrown away at the task's end. They are the strategy's trainable weights, so kept —
    also by the probe view, in which the memory learns from each batch's prompts (``test_time_updates``)."""
    from safetensors.torch import load_file

    from clbench.results.files import RunFiles

    cfg = micro_config(tmp_path, cache_dir=micro_cache, model={"autocast": "bfloat16"},
                       strategies="[{name: cms_local, options: {chunk_unit: tokens, "
                                  f"chunk_sizes: [8, 64, 256], test_time_updates: {str(test_time).lower()}}}}}]")
    ((run, status),) = run_grid(cfg, **QUIET)
    files = RunFiles(run)
    cms = json.loads(files.after(1).read_text())["diagnostics"]["cms"]
    first = cms["levels"][0]["updates"]
    assert cms["test_time_updates"] is test_time
    tensors = load_file(files.checkpoint(1) / "adapter.safetensors")
    down = {n: t for n, t in tensors.items() if "down.weight" in n}  # zero when the memory is added
    assert status == "done" and first > 0 and down
    assert all(t.dtype == torch.float32 for t in down.values())
    assert any(bool(t.abs().sum() > 0) for t in down.values())


# --- the output layer at labelled positions only ------------------------------------------------------
def test_the_loss_is_transformers_loss_and_the_output_layer_sees_only_labelled_positions():
    model, batch = tied_lora_llama(), qa_batch()
    seen = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    with torch.no_grad():
        reference = model(**batch).loss
        ours = causal_lm_loss(model, batch)
    hook.remove()
    assert seen[0] == (2, 12, 32)  # transformers: every position of the batch
    assert seen[1] == (5 + 5, 32)  # here: the positions whose next token is labelled (5 in each row)
    assert torch.allclose(ours, reference, rtol=1e-6, atol=0)


def test_its_gradients_are_transformers_gradients():
    batch = qa_batch(1)
    model = tied_lora_llama(1)
    model.zero_grad()
    model(**batch).loss.backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    _, ours = step(model, batch, autocast=False)
    assert ours.keys() == reference.keys()
    for n, want in reference.items():
        torch.testing.assert_close(ours[n], want, rtol=1e-5, atol=1e-7)


def test_the_torch_backend_takes_its_lm_loss_from_it(monkeypatch):
    """(sft and every strategy that adds a penalty — ewc, l2, olora, lwf, cms — call ``backend.lm_loss``.)"""
    from clbench.modeling import lm_loss

    calls = []
    real = lm_loss.causal_lm_loss
    monkeypatch.setattr(lm_loss, "causal_lm_loss", lambda m, b: calls.append(1) or real(m, b))
    model, batch = tied_lora_llama(), qa_batch()
    assert torch.equal(TorchBackend().lm_loss(model, batch), real(model, batch))
    assert calls == [1]


def test_a_batch_without_labels_or_a_model_without_output_embeddings_takes_the_model_loss():
    class Plain(torch.nn.Module):
        def forward(self, **batch):
            return type("Out", (), {"loss": torch.tensor(3.0)})()

    assert causal_lm_loss(Plain(), {"input_ids": torch.ones(1, 2, dtype=torch.long)}).item() == 3.0


# --- the attention kernel of a training step ----------------------------------------------------------
@pytest.mark.parametrize("kernel", ["auto", "math"])
def test_the_step_runs_in_the_attention_kernel_asked_for(tmp_path, kernel):
    cfg = micro_config(tmp_path, train={"attention_kernel": kernel})
    backend = TorchBackend()
    backend.start(cfg)
    model, batch = tied_lora_llama(), qa_batch()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    flash_allowed = []

    def loss_fn(m, b):
        flash_allowed.append(torch.backends.cuda.flash_sdp_enabled())  # sdpa_kernel's switch, CPU flash too
        return LossOutput(causal_lm_loss(m, b))

    loss, _, _ = backend.forward_backward(model, trainable, loss_fn, [batch], None)
    assert flash_allowed == [kernel == "auto"]
    assert torch.backends.cuda.flash_sdp_enabled()  # restored after the step
    with torch.no_grad():
        assert loss == pytest.approx(float(causal_lm_loss(model, batch)), rel=1e-5)  # the same loss either way


def test_an_unknown_attention_kernel_is_refused_with_the_allowed_values(tmp_path):
    with pytest.raises(ConfigError) as err:
        micro_config(tmp_path, train={"attention_kernel": "flash2"})
    assert "attention_kernel" in str(err.value) and "math" in str(err.value)


# --- LoRA merged for an evaluation row in mixed precision -----------------------------------------------
def test_merged_lora_layers_run_one_product_close_to_the_adapters_and_come_back_bitwise():
    from clbench.modeling.merged_lora import lora_merged

    model, batch = tied_lora_llama(), qa_batch()
    model.eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    adapter_calls = []
    hooks = [m.register_forward_hook(lambda *a: adapter_calls.append(1))
             for n, m in model.named_modules() if n.endswith("lora_A.default")]
    assert len(hooks) == 2 * 7
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        reference = model(**inputs).logits.float()
        calls_unmerged = len(adapter_calls)
        with lora_merged(model, torch.bfloat16) as n:
            merged = model(**inputs).logits.float()
            q = model.base_model.model.model.layers[0].self_attn.q_proj
            assert n == 2 * 7 and q.base_layer.weight.dtype == torch.bfloat16 and q.merged
            want = (before["base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"]
                    + q.get_delta_weight("default")).to(torch.bfloat16)
            assert torch.equal(q.base_layer.weight, want)  # W + s·BA, rounded once
        after = model(**inputs).logits.float()
    assert calls_unmerged == 2 * 7 and len(adapter_calls) == 2 * 2 * 7  # merged: no adapter product ran
    assert not torch.equal(merged, reference)  # computed differently ...
    torch.testing.assert_close(merged, reference, rtol=0, atol=0.05)  # ... the same model within bf16 rounding
    assert torch.equal(after, reference)  # unmerged again: bitwise the adapters' computation
    assert all(torch.equal(p, before[n]) and p.dtype == torch.float32 for n, p in model.named_parameters())
    for h in hooks:
        h.remove()


def test_merging_needs_mixed_precision_and_a_write_to_an_adapter_while_merged_is_an_error():
    from clbench.modeling.merged_lora import lora_merged

    model = tied_lora_llama()
    with lora_merged(model, None) as n:
        assert n == 0 and not model.base_model.model.model.layers[0].self_attn.q_proj.merged
    b = model.base_model.model.model.layers[1].mlp.up_proj.lora_B["default"].weight
    with pytest.raises(RuntimeError, match=r"stale.*layers\.1\.mlp\.up_proj"), lora_merged(model, torch.bfloat16), \
            torch.no_grad():
        b.mul_(2.0)
    assert not model.base_model.model.model.layers[1].mlp.up_proj.merged


def test_a_bf16_runs_evaluation_rows_merge_lora_and_a_float32_runs_do_not(tmp_path, micro_cache, micro_base_dir,
                                                                          monkeypatch):
    from clbench.modeling import merged_lora

    merged = []
    real = merged_lora.lora_merged

    def counting(model, dtype):
        cm = real(model, dtype)

        class Counted:
            def __enter__(self):
                n = cm.__enter__()
                merged.append((dtype, n))
                return n

            def __exit__(self, *exc):
                return cm.__exit__(*exc)

        return Counted()

    monkeypatch.setattr(merged_lora, "lora_merged", counting)
    for autocast in ("bfloat16", "none"):
        merged.clear()
        cfg = micro_config(tmp_path / autocast, cache_dir=micro_cache, model={"autocast": autocast})
        run_grid(cfg, **QUIET)
        trained = [n for _, n in merged if n]
        if autocast == "bfloat16":
            assert len(trained) == 2 and all(n > 0 for n in trained)  # the rows after the two trained tasks
        else:
            assert merged and all(d is None and n == 0 for d, n in merged)


def test_a_bf16_probe_view_holds_every_linear_weight_in_bf16_but_keep_and_scores_bitwise_the_same():
    from types import SimpleNamespace

    from clbench.eval.torch_lm import TorchLM

    model = tied_lora_llama()
    seqs = [[5, 9, 11, 40, 2], [7, 3, 3]]
    q = model.base_model.model.model.layers[0].self_attn.q_proj
    kept = q.lora_B["default"].weight
    view = TorchLM(model, SimpleNamespace(pad_token_id=0), batch_size=4, autocast=torch.bfloat16, keep=[kept])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        want = TorchLM(model, SimpleNamespace(pad_token_id=0)).forward_logprobs(seqs)  # autocast casting per op
    with view:
        assert q.base_layer.weight.dtype == torch.bfloat16
        assert q.lora_A["default"].weight.dtype == torch.bfloat16 and q.lora_A["default"].weight.requires_grad
        assert kept.dtype == torch.float32
        got = view.forward_logprobs(seqs)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert q.lora_A["default"].weight.requires_grad and not q.base_layer.weight.requires_grad
