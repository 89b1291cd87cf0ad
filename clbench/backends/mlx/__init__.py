"""The MLX backend: the same stream, probes, runner bookkeeping, metrics and results with an mlx-lm model.

Modules, one job each:

* :mod:`.model` — load an mlx-lm model from a local directory (the embedded model's checkpoint or a
  user's mlx-lm model, never the hub), the untrained reference model, device and dtype;
* :mod:`.lora` — LoRA through mlx-lm's tuner (``linear_to_lora_layers``), or full fine-tuning;
* :mod:`.lm` — :class:`~.lm.MLXLM`, the probe-facing view (``generate`` / ``loglikelihood`` /
  ``token_nll``) that ``clbench.eval.probes`` scores unchanged;
* :mod:`.optim` — one library optimizer per parameter tensor, so a tensor's Adam moments and step count
  advance only when it is updated (torch's AdamW semantics for parameters without a gradient);
* :mod:`.strategy` — the MLX strategy base class (the torch hook order, with flattened gradients);
* :mod:`.tiered` — the tier mechanism (skip / accumulate) shared by the tier strategies;
* :mod:`.cms_adapter` — the CMS chain of residual MLPs;
* :mod:`.strategies` — sft, layer_tiers, importance_tiers, cms, surprise, under the torch names and with
  the torch strategies' own option classes;
* :mod:`.trainer` — one task's training step, in ``clbench.train.loop``'s loop; :mod:`.runner` — the MLX
  operations (``MLXOps``) that ``clbench.run.one_run.run_one`` runs one run with, the same files as torch.

Nothing here is imported by ``import clbench``; ``clbench.backends.get_backend("mlx")`` loads it.
"""
