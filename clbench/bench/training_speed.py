"""Step time of the nested-learning strategies against ``sft``, side by side in one process.

Run::

    python -m clbench.bench.training_speed                 # the default variants, ratios vs sft
    python -m clbench.bench.training_speed --steps 40 --reps 7

Every strategy trains its own copy of the *same* randomly initialised model (the embedded model's
default shape: Llama, hidden 128, 4 blocks, 4 heads, MLP 384, vocabulary 1024) on the *same* batch
(32 × 24 tokens), through exactly the hooks the trainer calls, with the trainer's optimizer (AdamW, or a
variant's own train override such as ``optimizer: m3``, timed against AdamW on sft). Repetitions are
interleaved step by step — one step of each strategy in turn, in a rotating order — so that load from
other processes hits all strategies alike; a repetition is ``steps`` such rounds (a multiple of 4, the
period of the default schedules), and the result is the median over repetitions of the mean step time.

Each strategy first takes ``warmup`` untimed steps (more than importance tiers' default warm-up, so
the steady, tiered state is what is timed; its warm-up steps cost what sft's steps cost).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace

import torch

from clbench.backends import get_backend
from clbench.config.experiment import ExperimentConfig, StrategySpec, TrainConfig
from clbench.run.plan import resolve_entry
from clbench.train.step import optimizer_step
from clbench.train.strategy import TaskView

DEFAULT_MODEL = {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "intermediate_size": 384, "vocab_size": 1024}

# (label, registered name, options[, plugins as grid-entry `with:`[, train overrides]]); the targets are
# ratios of step time to sft (sft-m3: M3 against AdamW on the same strategy)
DEFAULT_VARIANTS: list[tuple] = [
    ("sft", "sft", {}),
    ("sft-m3", "sft", {}, [], {"optimizer": "m3", "lr": 1e-4, "max_grad_norm": 0.0}),  # as the bench row
    ("layer_tiers", "layer_tiers", {}),
    ("layer_tiers-deep", "layer_tiers", {"order": "deep_fast"}),
    ("importance_tiers", "importance_tiers", {}),
    ("cms", "cms", {}),
    ("cms-adapter", "cms", {"form": "adapter"}),
    ("cms-memory", "cms", {"form": "memory", "chunk_sizes": [1, 16, 256]}),
    ("cms-local", "cms_local", {"chunk_unit": "tokens", "chunk_sizes": [16, 256, 8192]}),
    ("activation_l2", "sft", {}, ["activation_l2"]),
    ("surprise", "sft", {}, ["surprise"]),
    ("surprise-2layers", "sft", {}, [{"name": "surprise", "options": {"layers": [1, 3], "weights": [0.3, 0.1]}}]),
    ("surprise-full", "sft", {}, [{"name": "surprise", "options": {"target": "full"}}]),
]
TARGETS = {"layer_tiers": 1.0, "layer_tiers-deep": 1.0, "importance_tiers": 1.0, "cms": 1.0, "surprise": 1.3,
           "sft-m3": 1.3, "cms-memory": 1.0}


def build_model(hidden_size: int, num_layers: int, num_heads: int, intermediate_size: int, vocab_size: int,
                seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                      num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
                      max_position_embeddings=128, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)


def make_batch(batch_size: int, seq_len: int, vocab_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, vocab_size, (batch_size, seq_len), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


class _Runner:
    """One strategy on its own copy of the model, stepping with the trainer's own step function."""

    def __init__(self, name: str, options: dict, base_model, train: TrainConfig, label: str, plugins=(),
                 train_overrides=None, autocast=None):
        train = replace(train, **(train_overrides or {}))
        cfg = ExperimentConfig(train=train)
        entry = resolve_entry(StrategySpec(name, options, label, tuple(plugins)), cfg)
        backend = get_backend("torch")
        backend.device = next(base_model.parameters()).device
        backend.autocast_dtype = autocast  # the run's model.autocast, as TorchBackend.start resolves it
        backend.attention_kernel = train.attention_kernel
        self.strategy = entry.make(0, cfg, backend)
        self.model = self.strategy.prepare_model(copy.deepcopy(base_model))
        self.strategy.mark_trainable(self.model)
        self.strategy.before_task(TaskView(1, "perf", ()), self.model)
        self.optimizer = self.strategy.backend.make_optimizer(self.strategy, self.model, train)
        # held for every step, as for a task's training (keeping what the strategy trains without a gradient)
        self._cast = backend.frozen_cast(self.model, self.strategy.trainable.values())
        self._cast.__enter__()
        self.train = train
        self.step = 0
        self.model.train()

    def close(self) -> None:
        self._cast.__exit__(None, None, None)

    def run(self, steps: int, batch: dict) -> None:
        for _ in range(steps):
            self.step += 1
            optimizer_step(self.strategy, self.model, self.optimizer, [batch] * self.train.grad_accum, self.step,
                           self.step, self.train.lr, self.train.max_grad_norm)
            self.strategy.step_log()


def measure_step_times(strategies: Sequence[tuple[str, str, dict]], steps: int = 20, reps: int = 5,
                       warmup: int = 24, batch_size: int = 32, seq_len: int = 24, threads: int = 1, seed: int = 0,
                       train: TrainConfig | None = None, **model_cfg) -> dict[str, float]:
    """Median seconds per optimizer step of each ``(label, name, options)``, measured side by side."""
    if threads:
        torch.set_num_threads(threads)
    shape = {**DEFAULT_MODEL, **model_cfg}
    base = build_model(**shape, seed=seed)
    batch = make_batch(batch_size, seq_len, shape["vocab_size"], seed)
    return step_times_on(base, batch, strategies, steps, reps, warmup, train or TrainConfig(batch_size=batch_size))


def step_times_on(base, batch: dict, strategies: Sequence[tuple], steps: int, reps: int, warmup: int,
                  train: TrainConfig) -> dict[str, float]:
    """:func:`measure_step_times` on a given model (each strategy trains a copy) and batch."""
    runners = []
    try:
        for v in strategies:
            runners.append((v[0], _Runner(v[1], v[2], base, train, v[0], *v[3:])))
        for _, r in runners:
            r.run(warmup, batch)
        times: dict[str, list[float]] = {label: [] for label, _ in runners}
        for rep in range(reps):
            spent = dict.fromkeys(times, 0.0)
            for i in range(steps):  # one step of each strategy in turn: slow load changes hit all alike
                shift = (rep * steps + i) % len(runners)
                for label, r in runners[shift:] + runners[:shift]:
                    t0 = time.perf_counter()
                    r.run(1, batch)
                    spent[label] += time.perf_counter() - t0
            for label, seconds in spent.items():
                times[label].append(seconds / steps)
    finally:  # each copy's weights back in float32, also when a step fails
        for _, r in runners:
            r.close()
    return {label: statistics.median(ts) for label, ts in times.items()}


def select_variants(wanted: str) -> list[tuple[str, str, dict]]:
    """The variants named in ``wanted`` (labels or registered names, comma-separated; ``all``), sft first."""
    if wanted.strip() == "all":
        return list(DEFAULT_VARIANTS)
    names = {w.strip() for w in wanted.split(",") if w.strip()} | {"sft"}
    chosen = [v for v in DEFAULT_VARIANTS if v[0] in names or v[1] in names]
    unknown = names - {v[0] for v in chosen} - {v[1] for v in chosen}
    if unknown:
        from clbench.errors import ConfigError

        raise ConfigError("--strategies", f"no perf variant named {sorted(unknown)}",
                          sorted({v[0] for v in DEFAULT_VARIANTS} | {v[1] for v in DEFAULT_VARIANTS}))
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="step time of the nested-learning strategies vs sft")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per repetition (a multiple of 4)")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions (median reported)")
    parser.add_argument("--warmup", type=int, default=24, help="untimed steps per strategy first")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--strategies", default="all",
                        help="comma-separated variant labels or strategy names to time (sft, the reference, always)")
    args = parser.parse_args(argv)
    result = measure_step_times(select_variants(args.strategies), steps=args.steps, reps=args.reps,
                                warmup=args.warmup, threads=args.threads)
    sft = result["sft"]
    print(f"{'strategy':<20} {'ms/step':>8} {'x sft':>6}  target")
    for label, sec in result.items():
        target = TARGETS.get(label)
        verdict = "" if target is None else f"<= {target:.2f}  {'ok' if sec / sft <= target else 'MISSED'}"
        print(f"{label:<20} {sec * 1e3:8.1f} {sec / sft:6.2f}  {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
