"""Training backends: ``torch`` (transformers + peft, the default) and ``mlx`` (mlx-lm).

A backend (``clbench.backends.base.Backend``) is what a run and every strategy need from an array
library; streams, probes, metrics, the strategies themselves and the results layout are shared, so both
backends write the same run directory (``clbench.results.files``) and reports never know which one
produced a number. Which strategies a backend can run is each strategy's ``backends`` attribute
(``clbench list`` shows it). The MLX backend is imported only when a config asks for it, so
``import clbench`` never imports MLX.
"""

from __future__ import annotations

from clbench.errors import ConfigError

BACKENDS = ("torch", "mlx")


def get_backend(name: str):
    """A fresh backend called ``name`` (``model.backend``); MLX needs the ``mlx`` extra installed."""
    if name == "torch":
        from clbench.backends.torch_backend import TorchBackend

        return TorchBackend()
    if name == "mlx":
        try:
            import mlx.core  # noqa: F401
            import mlx_lm  # noqa: F401
        except ImportError as exc:
            raise ConfigError("model.backend", f"'mlx' needs mlx and mlx-lm ({exc}); install the extra: "
                              "pip install 'clbench[mlx]'") from None
        from clbench.backends.mlx.backend import MLXBackend

        return MLXBackend()
    raise ConfigError("model.backend", f"unknown backend {name!r}", BACKENDS)
