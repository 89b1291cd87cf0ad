"""Shared pieces of the nested-learning tests: a tiny Llama, token batches, and one optimizer step —
``clbench.train.step.optimizer_step``, the trainer's own — so a test can look between steps."""

from __future__ import annotations

import torch

from clbench.backends.torch_backend import TorchBackend
from clbench.config.experiment import TrainConfig
from clbench.train import registry
from clbench.train.step import optimizer_step
from clbench.train.strategy import TaskView, UpdateContext

VOCAB = 64


def tiny_llama(layers: int = 4, hidden: int = 32, seed: int = 0, dtype=torch.float32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).to(dtype)


def token_batch(seed: int, n: int = 4, length: int = 10) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (n, length), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def make(name: str, options: dict | None = None, model=None, train: TrainConfig | None = None, seed: int = 0):
    """A registered strategy with validated options, its model prepared as the runner prepares it."""
    cls = registry.get(name)
    strategy = cls(cls.options_from(options or {}, name), seed=seed, train=train or TrainConfig(),
                   backend=TorchBackend())
    model = strategy.prepare_model(model if model is not None else tiny_llama())
    strategy.mark_trainable(model)
    return strategy, model


def make_with(name: str, options: dict | None, plugins: list[tuple[str, dict]], model=None,
              train: TrainConfig | None = None, seed: int = 0):
    """A registered strategy with plugins (a grid entry's ``with:``), composed and prepared as the runner does."""
    from clbench.train.plugin import Composed, attach

    cls = registry.get(name)
    strategy = cls(cls.options_from(options or {}, name), seed=seed, train=train or TrainConfig(),
                   backend=TorchBackend())
    composed = Composed(strategy, [attach(pc := registry.get_plugin(p), pc.options_from(o, p), strategy)
                                   for p, o in plugins])
    model = composed.prepare_model(model if model is not None else tiny_llama())
    composed.mark_trainable(model)
    return composed, model


def begin(strategy, model, index: int = 1) -> None:
    strategy.before_task(TaskView(index, f"task{index}", ()), model)


def train_step(strategy, model, optimizer, step: int, batches: list[dict], max_grad_norm: float = 0.0) -> int:
    """One optimizer step as the trainer runs it (``len(batches)`` micro-batches of gradient accumulation)."""
    lr = optimizer.param_groups[0]["lr"]
    return optimizer_step(strategy, model, optimizer, batches, step, step, lr, max_grad_norm).updated


def apply_grads(strategy, model, optimizer, step: int, grads: dict, max_grad_norm: float = 0.0) -> int:
    """``strategy.apply_update`` with hand-made gradients ``{name: tensor}``, applied as the trainer applies them."""
    lr = optimizer.param_groups[0]["lr"]

    def apply(applied, total_norm=None, clip=True):
        return strategy.backend.apply_gradients(optimizer, model, strategy.trainable, applied, lr,
                                                max_grad_norm if clip else 0.0, total_norm)

    updated = strategy.apply_update(UpdateContext(step, step, grads, lr, max_grad_norm, apply))
    strategy.backend.clear_gradients(strategy.trainable)
    return updated


def snapshot(params: dict) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in params.items()}
