"""What a backend supplies: the one interface a run and every strategy are written against.

A strategy is one class (``clbench.train.strategy.Strategy``) for every backend. Whatever it needs from
an array library goes through ``self.backend``, an instance of a subclass of :class:`Backend`
(``clbench.backends.torch_backend.TorchBackend``, ``clbench.backends.mlx.backend.MLXBackend``):

* **arrays** — gradients arrive as values keyed by parameter name (``{name: gradient}``), and a
  strategy combines them with :meth:`accumulate`, :meth:`divide`, :meth:`clip_global_norm`,
  :meth:`snapshot` (an algorithm's own arithmetic sits with it, one twin module per backend: the tier
  norms in ``clbench.train.tiers.norms_torch`` / ``norms_mlx``, the importance scores in
  ``clbench.train.tiers.importance_torch`` / ``importance_mlx``);
* **model surgery** — :meth:`prepare_lora_or_full`, :meth:`decoder_blocks`, :meth:`parameters` (current
  values of named parameters); an algorithm's own surgery stays in its modules (the CMS adapter chain:
  ``clbench.modeling.cms_adapter`` and its MLX twin ``clbench.backends.mlx.cms_adapter``);
* **one step** — :meth:`forward_backward` (micro-batches → mean loss, logs and gradients; parameters
  outside ``keep`` get no gradient and cost no backward) and :meth:`apply_gradients` (clip, then the
  optimizer on exactly the given gradients);
* **the run** — loading, seeding, the reference model, the probe view, the optimizer and its saved
  state, the adapter file: what ``clbench.run.one_run.run_one`` calls, so the order of work, the files
  and the resume rules are written once.

What stays backend-specific is small and local: how a gradient is computed (autograd vs
``nn.value_and_grad``), surprise's gradient trick (a tensor hook vs a custom VJP), and each library's
own arithmetic, kept exactly as it was so results stay byte-identical.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from clbench.errors import ConfigError

Grads = dict[str, Any]  # {parameter name: gradient array}


class Backend:
    """Base class of the backends; see the module docstring for what each group of methods is for."""

    name: ClassVar[str] = "base"
    checkpoint_meta: ClassVar[dict] = {}  # extra keys of every checkpoint header (e.g. the backend's name)

    # --- the run ----------------------------------------------------------------------------------
    def check_stream(self, stream) -> None:
        """Raise ``ConfigError`` for a stream this backend cannot evaluate (before anything is written)."""

    def start(self, cfg) -> dict:
        """Set-up before ``config.json`` is written (a bad device is refused then); returns extra
        ``provenance.json`` fields."""
        return {}

    def load(self, cfg, base_dir: Path):
        """``(model, tokenizer)`` of the base model."""
        raise NotImplementedError

    @property
    def numerics(self) -> dict:
        """How this backend computes, as resolved on this machine (device, weight dtype, autocast): recorded
        in ``provenance.json`` and part of the cached reference/base rows' key (``clbench.run.base_scores``)."""
        return {}

    def compute(self):
        """The context every forward pass of the run runs in — training steps, the strategy's task hooks
        (a Fisher, an importance estimate), evaluation: torch's autocast when mixed precision is on."""
        return contextlib.nullcontext()

    def training_compute(self):
        """The context training-like passes run in — each training step's forward and backward, and a
        strategy's task hooks (``before_task`` / ``after_task``: a Fisher, an importance estimate):
        :meth:`compute`, and on torch the training attention kernel (``train.attention_kernel``)."""
        return self.compute()

    def frozen_cast(self, model, keep=()):
        """The context a task's training, its hooks and each evaluation row run in: with mixed precision,
        ``model``'s frozen weights (but ``keep``: what the strategy trains without a gradient) held in the
        compute dtype for the phase instead of cast at every forward pass
        (``clbench.modeling.frozen_cast``); the same products either way."""
        return contextlib.nullcontext()

    def evaluation_weights(self, model):
        """The context an evaluation row after a trained task runs in, around its view: on the torch backend
        with mixed precision each LoRA layer as one product with its merged weight
        (``clbench.modeling.merged_lora``: the same model, rounded once instead of per product)."""
        return contextlib.nullcontext()

    def seed(self, seed: int) -> None:
        """Seed every generator the run draws from (before ``prepare_model`` and before each task)."""
        from clbench.seeding import seed_everything

        seed_everything(seed)

    def place(self, model):
        """The prepared model where it trains (a device)."""
        return model

    def reference(self, cfg, base_dir: Path, model):
        """An untrained model of the base model's architecture."""
        raise NotImplementedError

    def view(self, model, tokenizer, batch_size: int, keep=()):
        """The probe-facing view of ``model`` (a context manager; ``clbench.eval.lm_view.LMView``); ``keep``:
        the weights that may change while it is open (the strategy's trainable ones)."""
        raise NotImplementedError

    def make_optimizer(self, strategy, model, train_cfg):
        """The optimizer over ``strategy.param_groups()`` (a group may divide the learning rate)."""
        raise NotImplementedError

    def make_schedule(self, optimizer, train_cfg):
        """The learning-rate schedule of one task: ``.lr(step)`` for 1-based steps, ``.advance()`` after each."""
        raise NotImplementedError

    def optimizer_state(self, optimizer) -> dict:
        """The optimizer's state as ``torch.save``-able data."""
        raise NotImplementedError

    def load_optimizer_state(self, optimizer, state: dict, strategy) -> None:
        raise NotImplementedError

    def save_adapter(self, path: Path, tensors: dict, metadata: dict[str, str]) -> None:
        """Write ``tensors`` (the strategy's checkpoint tensors) as safetensors, atomically."""
        raise NotImplementedError

    def load_adapter(self, path: Path) -> dict:
        raise NotImplementedError

    # --- model surgery ----------------------------------------------------------------------------
    @property
    def surprise(self):
        """The module doing surprise's gradient trick for this library: ``prepare(blocks, model)`` and
        ``loss(chosen, model, batch, inner) -> (LossOutput, SurpriseTerms)`` (``chosen``: a
        ``clbench.train.types.SurpriseBlocks``; the terms are this micro-batch's, returned to the plugin)."""
        raise NotImplementedError

    def prepare_lora_or_full(self, model, options):
        """``options.mode``: LoRA adapters only trainable (``lora``), or every weight (``full``)."""
        raise NotImplementedError

    def freeze(self, model):
        """``model`` with no parameter trainable (returned for chaining)."""
        raise NotImplementedError

    def trainable(self, model) -> dict:
        """``{name: parameter}`` of what is trainable now (names as checkpoints store them)."""
        raise NotImplementedError

    def parameters(self, model, names) -> dict:
        """Current values of the named parameters (inside a loss: the values being differentiated)."""
        raise NotImplementedError

    def load_parameters(self, model, tensors: Mapping[str, Any]) -> None:
        """Set the named parameters to ``tensors`` (converted to each parameter's dtype and device)."""
        raise NotImplementedError

    def decoder_blocks(self, model) -> list:
        """The transformer blocks of ``model`` in depth order."""
        raise NotImplementedError

    # --- arrays -----------------------------------------------------------------------------------
    def accumulate(self, total, g):
        """``total + g``; may reuse ``total``'s storage (it must be a buffer the caller owns)."""
        raise NotImplementedError

    def accumulate_all(self, totals: Sequence, grads: Sequence) -> list:
        """:meth:`accumulate` of every pair (a backend may do them in one call)."""
        return [self.accumulate(t, g) for t, g in zip(totals, grads, strict=True)]

    def divide(self, g, d: float):
        raise NotImplementedError

    def materialize(self, arrays: Sequence) -> None:
        """Force lazily computed arrays (MLX); nothing to do for eager libraries."""

    def clip_global_norm(self, grads: Grads, max_norm: float, total=None) -> Grads:
        """``grads`` scaled so their global L2 norm is at most ``max_norm`` (0 disables); ``total``: that
        norm, when already known (the tier updater's ``subset_norm``)."""
        raise NotImplementedError

    def snapshot(self, params: Mapping[str, Any]) -> dict:
        """A copy of ``params`` that later updates do not change."""
        raise NotImplementedError

    def from_torch(self, tensor, like):
        """A CPU torch tensor (from ``strategy_state.pt``) as an array shaped and typed like ``like``."""
        raise NotImplementedError

    # --- one step ---------------------------------------------------------------------------------
    def lm_loss(self, model, batch):
        """The causal-LM loss of one batch (mean over labelled tokens)."""
        raise NotImplementedError

    def forward_backward(self, model, trainable: Mapping[str, Any], loss_fn: Callable, batches: Sequence[dict],
                         keep) -> tuple[float, dict[str, float], Grads]:
        """Mean loss, mean logs and the mean gradient over ``batches`` (micro-batches of one step).

        ``loss_fn(model, batch)`` returns a ``LossOutput``. ``keep`` (a collection of names, or None for
        every trainable parameter) says which parameters need a gradient: the others are frozen for the
        step, so their gradient is neither computed nor returned.

        Each micro-batch's loss is differentiated as it is and the sum is divided by the micro-batches once,
        at the end: whatever sees a gradient inside the backward pass (a hook on an activation, a custom
        VJP) sees that micro-batch's own, with no factor for ``grad_accum`` to undo.
        """
        raise NotImplementedError

    def apply_gradients(self, optimizer, model, trainable: Mapping[str, Any], grads: Grads, lr: float,
                        max_norm: float, total_norm=None) -> int:
        """Clip ``grads`` to the global norm ``max_norm`` (0: no clipping; ``total_norm``: their norm,
        if the caller has it) and apply them with ``optimizer`` at learning rate ``lr`` (the schedule's
        value for this step; torch's schedule has set it already); parameters without an entry are not
        touched (no moment, step count or weight decay change). Returns the elements updated."""
        raise NotImplementedError

    def clear_gradients(self, trainable: Mapping[str, Any]) -> None:
        """Drop whatever gradient a step left (called after every ``apply_update``)."""


def unsupported(strategy_name: str, backend_name: str, supported: Sequence[str], options=None,
                works: Mapping[str, Any] | None = None) -> ConfigError:
    """The error for a strategy that has no implementation on a backend; when other option values would
    run it there (``works``, from ``Strategy.options_for_backend``), it names them and the ``options``
    (the resolved dataclass) that keep it off."""
    if works:
        now = ", ".join(f"options.{k}: {getattr(options, k, '?')}" for k in works)
        fix = ", ".join(f"{k}: {v}" for k, v in works.items())
        return ConfigError("strategies", f"strategy {strategy_name!r} with {now} is not available with "
                           f"model.backend: {backend_name} (that runs on: {', '.join(supported)}); with "
                           f"options {{{fix}}} it runs on {backend_name}, e.g. "
                           f"{{name: {strategy_name}, options: {{{fix}}}}}", list(supported))
    return ConfigError("strategies", f"strategy {strategy_name!r} is not available with model.backend: "
                       f"{backend_name} (it runs on: {', '.join(supported)})", list(supported))
