"""EWC's per-sample Fisher from batched passes (``clbench.train.per_sample_fisher``) against the per-sample
loop it replaces, on a microscopic Llama with LoRA and padded Q/A batches."""

import torch

from clbench.modeling.lm_loss import causal_lm_sample_losses
from clbench.train.penalties import diagonal_fisher, sample_losses
from clbench.train.per_sample_fisher import linear_sample_fisher
from tests.test_training_fast_paths import qa_batch, tied_lora_llama


def lora_params(model):
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def test_each_rows_loss_is_the_loss_of_the_row_alone():
    model, batch = tied_lora_llama(), qa_batch()
    model.eval()
    with torch.no_grad():
        ours = causal_lm_sample_losses(model, batch)
        alone = [model(**{k: v[i:i + 1] for k, v in batch.items()}).loss for i in range(2)]
    assert ours.shape == (2,)
    torch.testing.assert_close(ours, torch.stack(alone), rtol=1e-6, atol=0)


def test_the_batched_fisher_is_the_per_sample_loops_fisher():
    model = tied_lora_llama(2)
    model.eval()
    batches = [qa_batch(0), qa_batch(1), qa_batch(2)]
    params = lora_params(model)
    loop = diagonal_fisher(params, sample_losses(model, batches))
    batched = linear_sample_fisher(model, params, batches)
    square_of_mean = diagonal_fisher(params, (model(**b).loss for b in batches))
    assert batched.keys() == loop.keys() and len(batched) == 2 * 2 * 7
    for n in loop:
        torch.testing.assert_close(batched[n], loop[n], rtol=1e-4, atol=1e-10)
    # and it is not the squared mean gradient of each batch (Avalanche's estimator), which a batched pass
    # gives when the per-sample step is skipped
    assert not all(torch.allclose(square_of_mean[n], loop[n], rtol=1e-2) for n in loop)
    assert all(p.grad is None for p in params.values())  # the optimizer's buffers untouched


def test_it_declines_what_it_cannot_do_exactly_and_the_caller_loops():
    model = tied_lora_llama()
    batches = [qa_batch(0)]
    embedding = model.get_input_embeddings().weight.requires_grad_(True)
    with_embedding = {**lora_params(model), "embed": embedding}
    # tied to the output Linear, but the lookup's share of its gradient is no Linear's: declined
    assert model.get_output_embeddings().weight is embedding
    assert linear_sample_fisher(model, with_embedding, batches) is None
    classifier = torch.nn.Sequential(torch.nn.Linear(4, 3))
    assert linear_sample_fisher(classifier, dict(classifier.named_parameters()),
                                [{"x": torch.zeros(2, 4), "y": torch.zeros(2)}]) is None


def test_an_ewc_run_on_a_lora_lm_takes_the_batched_path(tmp_path, micro_cache, micro_base_dir, monkeypatch):
    import json

    from clbench.run.grid import run_grid
    from clbench.strategies import ewc
    from tests.conftest import micro_config

    def no_loop(*a, **k):
        raise AssertionError("the per-sample loop ran")

    monkeypatch.setattr(ewc, "sample_losses", no_loop)
    cfg = micro_config(tmp_path, cache_dir=micro_cache, strategies="[ewc]")
    ((run, status),) = run_grid(cfg, progress=False, echo=lambda *a: None)
    diag = json.loads((run / "eval" / "after_2.json").read_text())["diagnostics"]
    assert status == "done" and diag["ewc_terms"] == 2 and all(f > 0 for f in diag["fisher_mean"])


def test_a_linear_layers_bias_gets_its_per_sample_fisher():
    """Full fine-tuning of a Llama with biased attention projections: the Fisher of each bias (the sum of
    the output gradient over a sample's positions, squared, averaged over samples) equals the per-sample
    loop's, as does its weight's; a wrong axis (summed over the batch, or not over positions) does not."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, attention_bias=True)
    model = LlamaForCausalLM(cfg)
    model.eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("proj.bias"):
                p.normal_(std=0.1)
    params = {n: p for n, p in model.named_parameters() if ".self_attn." in n and ("v_proj" in n or "q_proj" in n)}
    assert sum(n.endswith(".bias") for n in params) == 4
    batches = [qa_batch(0), qa_batch(1)]
    loop = diagonal_fisher(params, sample_losses(model, batches))
    batched = linear_sample_fisher(model, params, batches)
    assert batched is not None and batched.keys() == loop.keys()
    for n in loop:
        torch.testing.assert_close(batched[n], loop[n], rtol=1e-4, atol=1e-12)
        assert batched[n].abs().max() > 0, n
