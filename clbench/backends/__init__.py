"""Training backends: ``torch`` (transformers + peft, the default) and ``mlx`` (mlx-lm).

A backend is what the grid needs to run one experiment with a given array library: the names of the
strategies it implements, a constructor that validates a grid entry before anything runs, and the
function that runs one (strategy, seed). Streams, probes, metrics and the results layout are shared:
both backends write the same run directory (``clbench.results.files``), so reports never know which one
produced a number. The MLX backend is imported only when a config asks for it, so ``import clbench``
never imports MLX.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from clbench.errors import ConfigError

BACKENDS = ("torch", "mlx")


@dataclass(frozen=True)
class Backend:
    name: str
    strategy_names: Callable[[], list[str]]  # what "all" in a grid expands to
    make_strategy: Callable  # (StrategySpec, seed, ExperimentConfig) -> strategy; raises ConfigError
    run_one: Callable  # (cfg, stream, spec, seed, base_dir, progress) -> (run dir, status)
    check_stream: Callable = lambda stream: None  # raises ConfigError for a stream it cannot evaluate


def get_backend(name: str) -> Backend:
    """The backend called ``name`` (``model.backend``); MLX needs the ``mlx`` extra installed."""
    if name == "torch":
        from clbench.run import one_run as runner
        from clbench.train import registry

        return Backend("torch", registry.names, runner.make_strategy, runner.run_one)
    if name == "mlx":
        try:
            import mlx.core  # noqa: F401
            import mlx_lm  # noqa: F401
        except ImportError as exc:
            raise ConfigError("model.backend", f"'mlx' needs mlx and mlx-lm ({exc}); install the extra: "
                              "pip install 'clbench[mlx]'") from None
        from clbench.backends.mlx import runner, strategies

        return Backend("mlx", strategies.names, strategies.make_strategy, runner.run_one, runner.check_stream)
    raise ConfigError("model.backend", f"unknown backend {name!r}", BACKENDS)
