"""``clbench perf`` / ``make perf``: throughput benchmarks, printed, never asserted.

* training tokens/s of ``sft`` on the default embedded model size and the default stream's records;
* evaluation items/s for each probe kind (exact match with greedy generation, multiple choice,
  perplexity);
* step-time ratios of the nested-learning strategies against ``sft``, measured side by side in the
  same process on the same model and batches (``clbench.bench.training_speed``);
* on a real pretrained model (``--model``; by default SmolLM2-135M when it is installed): native
  scoring against lm-eval's HFLM, and training tokens/s of sft and the nested strategies
  (``clbench.bench.real_model``).

The model is randomly initialised (speed does not depend on what it knows), so the benchmark needs no
cached base model. Numbers vary with machine load; compare ratios from one run, not absolute times.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from clbench.config.experiment import ExperimentConfig, load_config
from clbench.data.encoding import batch_stream, count_tokens, encode_example
from clbench.data.streams import load_stream
from clbench.eval.probes import score_suite
from clbench.eval.torch_lm import TorchLM


def _model_and_tokenizer(cfg: ExperimentConfig, stream):
    from transformers import LlamaForCausalLM

    from clbench.modeling.tiny import build_config, tokenizer_corpus
    from clbench.modeling.tokenizer import train_bpe_tokenizer

    tok = train_bpe_tokenizer(tokenizer_corpus(stream), cfg.model.vocab_size)
    torch.manual_seed(0)
    return LlamaForCausalLM(build_config(cfg.model, tok)), tok


def training_throughput(cfg: ExperimentConfig, stream, steps: int) -> dict:
    """sft (LoRA) tokens/s and ms/step on the stream's second task, after 3 warm-up steps."""
    from clbench.backends.torch_backend import TorchBackend
    from clbench.train import registry
    from clbench.train.step import optimizer_step

    model, tok = _model_and_tokenizer(cfg, stream)
    strategy = registry.get("sft")(seed=0, train=cfg.train, backend=TorchBackend())
    model = strategy.prepare_model(model)
    strategy.mark_trainable(model)
    opt = strategy.backend.make_optimizer(strategy, model, cfg.train)
    task = stream.trained_tasks[0]
    batches = batch_stream([encode_example(tok, r, cfg.model.max_length) for r in task.train],
                           cfg.train.batch_size, tok.pad_token_id, seed=0)
    tokens, seconds = 0, 0.0
    for i in range(steps + 3):
        batch = next(batches)
        t0 = time.perf_counter()
        optimizer_step(strategy, model, opt, [batch], i + 1, i + 1, cfg.train.lr, cfg.train.max_grad_norm)
        if i >= 3:
            seconds += time.perf_counter() - t0
            tokens += count_tokens(batch)
    return {"tokens_per_s": tokens / seconds, "ms_per_step": 1000 * seconds / steps,
            "tokens_per_step": tokens / steps}


def eval_throughput(cfg: ExperimentConfig, stream) -> dict:
    """Probe items/s per probe kind over every task's suite of that kind."""
    model, tok = _model_and_tokenizer(cfg, stream)
    out = {}
    with TorchLM(model, tok, batch_size=cfg.eval.batch_size) as lm:
        for kind in ("exact_match", "multiple_choice", "perplexity"):
            suites = [s for t in stream.tasks for s in t.probes if s.kind == kind]
            t0 = time.perf_counter()
            n = sum(score_suite(s, lm, cfg.eval.max_new_tokens).n for s in suites)
            out[kind] = n / (time.perf_counter() - t0)
    return out


def main(args) -> int:
    """``args``: ``clbench perf``'s parsed arguments (its flags hold the defaults)."""
    steps = args.steps
    bench = Path("configs/bench.yaml")
    cfg = load_config(bench if bench.exists() else None)
    torch.set_num_threads(cfg.train.threads or torch.get_num_threads())
    stream = load_stream(cfg.stream)
    print(f"clbench perf: embedded model hidden {cfg.model.hidden_size} x {cfg.model.num_layers} layers, "
          f"batch {cfg.train.batch_size}, {torch.get_num_threads()} thread(s)")
    tr = training_throughput(cfg, stream, steps)
    print(f"  training (sft, LoRA r=16): {tr['tokens_per_s']:,.0f} tokens/s, {tr['ms_per_step']:.1f} ms/step "
          f"({tr['tokens_per_step']:.0f} tokens/step)")
    for kind, rate in eval_throughput(cfg, stream).items():
        print(f"  evaluation {kind}: {rate:,.0f} items/s")
    print("\nstep time against sft, side by side in this process (clbench/bench/training_speed.py):")
    from clbench.bench import training_speed as perf_nested

    rc = perf_nested.main(["--strategies", args.strategies])
    from clbench.bench.real_model import main as real_main

    return rc or real_main(args)
