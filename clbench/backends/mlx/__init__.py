"""The MLX backend: the same stream, probes, runner bookkeeping, metrics and results with an mlx-lm model.

Modules, one job each:

* :mod:`.model` — load an mlx-lm model from a local directory (the embedded model's checkpoint or a
  user's mlx-lm model, never the hub), the untrained reference model, device and dtype;
* :mod:`.lora` — LoRA through mlx-lm's tuner (``linear_to_lora_layers``), or full fine-tuning;
* :mod:`.lm` — :class:`~.lm.MLXLM`, the probe-facing view (``generate`` / ``loglikelihood`` /
  ``token_nll``) that ``clbench.eval.probes`` scores unchanged;
* :mod:`.optim` — one library optimizer per parameter tensor, so a tensor's Adam moments and step count
  advance only when it is updated (torch's AdamW semantics for parameters without a gradient);
* :mod:`.cms_adapter` — the CMS chain of residual MLPs;
* :mod:`.surprise` — surprise's gradient trick (a custom VJP), the one backend-specific part of that plugin;
* :mod:`.backend` — :class:`~.backend.MLXBackend`, the MLX side of ``clbench.backends.base.Backend``:
  arrays, model surgery, one step's gradients and update, and what a run needs (loading, adapter files).

The strategies themselves are the torch backend's classes (``strategies/``): one class per algorithm.
Nothing here is imported by ``import clbench``; ``clbench.backends.get_backend("mlx")`` loads it.
"""
