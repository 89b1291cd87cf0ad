"""The strategies the MLX backend implements, under the torch backend's names and option keys.

One file per algorithm, each a thin class over ``clbench.train.tiers.schedule`` (the pure schedule, shared with torch)
and ``..tiered`` (the MLX wiring). A grid that asks the MLX backend for any other strategy fails before
training with the list of these names.
"""

from __future__ import annotations

from clbench.backends.mlx.strategies.cms import CMS
from clbench.backends.mlx.strategies.importance_tiers import ImportanceTiers
from clbench.backends.mlx.strategies.layer_tiers import LayerTiers
from clbench.backends.mlx.strategies.sft import SFT
from clbench.backends.mlx.strategies.surprise import Surprise
from clbench.errors import ConfigError, did_you_mean
from clbench.run import one_run as runner

STRATEGIES = {"sft": SFT, "layer_tiers": LayerTiers, "importance_tiers": ImportanceTiers, "cms": CMS,
              "surprise": Surprise}
for _name, _cls in STRATEGIES.items():
    _cls.name = _name


def names() -> list[str]:
    """Every MLX strategy name (what ``strategies: [all]`` means with ``model.backend: mlx``)."""
    return list(STRATEGIES)


def get(name: str) -> type:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ConfigError("strategies", f"strategy {name!r} has no MLX implementation (model.backend is 'mlx')"
                          f"{did_you_mean(name, STRATEGIES)}", STRATEGIES) from None


def make_strategy(spec, seed: int, cfg):
    """Instantiate a grid entry for the MLX backend, validating its options as the torch runner does."""
    return runner.make_strategy(spec, seed, cfg, get)
