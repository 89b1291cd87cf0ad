"""LoRA's options are one group that no strategy option can shadow: every registered strategy's adapters
are scaled by the configured alpha / rank, no option is declared twice along an Options class's bases, and
configs with the old flat keys are told what to write."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from clbench.backends import get_backend
from clbench.config.experiment import StrategySpec
from clbench.config.options import to_dict
from clbench.errors import ConfigError
from clbench.modeling.lora import LoraOptions, LoraSettings
from clbench.run.plan import resolve_entry, stored_options_match
from clbench.run.sweep import apply_setting, sweep_space
from clbench.train import registry
from tests.conftest import micro_config

LORA_STRATEGIES = [n for n in registry.names() if issubclass(registry.get(n).Options, LoraOptions)]


def _scalings(model) -> set[float]:
    """Every peft LoRA layer's effective scale of its low-rank product (``scaling``: adapter -> alpha / r)."""
    return {s for m in model.modules() if isinstance(getattr(m, "scaling", None), dict) for s in m.scaling.values()}


def _rows():
    """(strategy, plugin or None) for every LoRA strategy, and every plugin on sft."""
    return [(n, None) for n in LORA_STRATEGIES] + [("sft", p) for p in registry.plugin_names()]


def test_the_registry_has_lora_strategies_and_plugins_to_check():
    assert {"sft", "lwf", "ewc", "olora", "cms", "layer_tiers"} <= set(LORA_STRATEGIES)
    assert {"surprise", "activation_l2"} <= set(registry.plugin_names())


@pytest.mark.parametrize("lora", [None, {"rank": 4, "alpha": 12.0}], ids=["defaults", "rank4-alpha12"])
@pytest.mark.parametrize("name,plugin", _rows(), ids=lambda v: v or "")
def test_adapters_are_scaled_by_the_configured_alpha_over_rank(name, plugin, lora, micro_model, tmp_path):
    """lwf's distillation weight (``alpha`` 1.0) once replaced LoRA's alpha (32): its adapters were scaled
    by 1/16 = 0.0625 where every other strategy's were scaled by 2."""
    model, _ = micro_model
    cfg = micro_config(tmp_path)
    spec = StrategySpec(name, {"lora": lora} if lora else {}, with_=(plugin,) if plugin else ())
    strategy = resolve_entry(spec, cfg).make(0, cfg, get_backend("torch"))
    configured = LoraSettings(**(lora or {}))
    model = strategy.prepare_model(model)
    assert _scalings(model) == {configured.alpha / configured.rank}


def _declared_along_bases(cls) -> list[str]:
    """Field names each dataclass along ``cls``'s bases declares itself (a name twice: one shadows another)."""
    return [name for base in cls.__mro__ if dataclasses.is_dataclass(base)
            for name in inspect.get_annotations(base) if not name.isupper()]


@pytest.mark.parametrize("cls", [registry.get(n) for n in registry.names()] +
                         [registry.get_plugin(n) for n in registry.plugin_names()], ids=lambda c: c.name)
def test_no_option_is_declared_twice_along_the_bases(cls):
    names = _declared_along_bases(cls.Options)
    assert sorted(n for n in set(names) if names.count(n) > 1) == []
    assert len(names) == len(dataclasses.fields(cls.Options))


def test_a_shadowing_option_would_be_seen():
    """The check above sees the bug it guards against: a subclass that declares ``mode`` again."""
    @dataclasses.dataclass(frozen=True)
    class Shadowing(LoraOptions):
        mode: str = "full"

    assert _declared_along_bases(Shadowing).count("mode") == 2


def test_lwf_distillation_weight_and_lora_alpha_are_set_apart():
    cls = registry.get("lwf")
    options = cls.options_from({"distill_weight": 0.5, "lora": {"alpha": 8.0}}, "strategies[lwf].options")
    assert (options.distill_weight, options.lora.alpha, options.lora.rank) == (0.5, 8.0, 16)


@pytest.mark.parametrize("name,key,value,expected", [
    ("sft", "rank", 8, "strategies[x].options.rank: 'rank' is now 'lora.rank': write lora: {rank: 8}"),
    ("ewc", "target_modules", ["q_proj"], "write lora: {target_modules: [\"q_proj\"]}"),
    ("lwf", "alpha", 2.0, ("'alpha' set 'distill_weight' and 'lora.alpha' at once, which are separate options now; "
                           "write the one you mean: distill_weight: 2.0 or lora: {alpha: 2.0}")),
])
def test_old_flat_lora_keys_say_what_to_write(name, key, value, expected):
    with pytest.raises(ConfigError) as info:
        registry.get(name).options_from({key: value}, "strategies[x].options")
    assert expected in str(info.value)


def test_a_sweep_names_lora_options_with_their_group(tmp_path):
    cfg = micro_config(tmp_path)
    spec = StrategySpec("sft", {"lora": {"alpha": 8.0}}, sweep={"lora.rank": [4, 8]})
    assert sweep_space(spec, cfg, registry.get("sft")) == {"options.lora.rank": [4, 8]}
    entry = resolve_entry(apply_setting(spec, {"options.lora.rank": 4}), cfg)
    assert (entry.options.lora.rank, entry.options.lora.alpha) == (4, 8.0)
    assert spec.options == {"lora": {"alpha": 8.0}}  # the user's spec is not changed
    with pytest.raises(ConfigError, match=r"sweep\.rank: 'rank' is now 'lora\.rank': write lora\.rank: \[4, 8\]"):
        sweep_space(StrategySpec("sft", sweep={"rank": [4, 8]}), cfg, registry.get("sft"))


def test_results_stored_with_the_flat_keys_are_the_same_experiment_except_lwf(tmp_path):
    """A ``config.json`` written before the group stores ``rank``/``alpha``/... flat: the same sft run is
    recognised; lwf's stored ``alpha`` 1.0 was its adapters' alpha too, so it is not today's default lwf."""
    cfg = micro_config(tmp_path)
    sft = resolve_entry(StrategySpec("sft"), cfg)
    flat = {"mode": "lora", "rank": 16, "alpha": 32.0, "dropout": 0.0, "target_modules": []}
    assert stored_options_match(sft, flat)
    assert not stored_options_match(sft, {**flat, "rank": 8})
    lwf = resolve_entry(StrategySpec("lwf"), cfg)
    old_lwf = {**{k: v for k, v in flat.items() if k != "alpha"}, "alpha": 1.0, "temperature": 2.0,
               "first_task_teacher": True, "t_squared": True}
    assert not stored_options_match(lwf, old_lwf)
    assert stored_options_match(resolve_entry(StrategySpec("lwf", {"lora": {"alpha": 1.0}}), cfg), old_lwf)
    assert to_dict(lwf.options)["lora"]["alpha"] == 32.0
