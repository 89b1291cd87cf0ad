"""The pure tier schedule (clbench.train.tiers.schedule) and the map-handling parts of the tier mechanism (clbench.train.tiers.updater)."""

from __future__ import annotations

import pytest
import torch

from clbench.backends.torch_backend import TorchBackend
from clbench.modeling.blocks import decoder_blocks
from clbench.train.tiers.schedule import (
    active_tiers,
    adapter_unit,
    check_frequencies,
    layer_of,
    tier_members,
    tiers_by_depth,
    tiers_by_score,
    update_counts,
)
from clbench.train.tiers.updater import TieredUpdater
from tests.nested_helpers import make, tiny_llama

# seed 000's table: step -> tiers that update, frequencies [1, 2, 4]
SEED_TABLE = {1: [0], 2: [0, 1], 3: [0], 4: [0, 1, 2], 5: [0], 6: [0, 1], 7: [0], 8: [0, 1, 2]}


def test_seed_activity_table():
    assert {s: active_tiers(s, [1, 2, 4]) for s in range(1, 9)} == SEED_TABLE


def test_update_counts_match_the_schedule():
    assert update_counts(20, [1, 2, 4]) == [20, 10, 5]
    assert update_counts(8, [1, 2, 4]) == [8, 4, 2]
    for freqs in ([1, 2, 4], [3, 5], [2, 4, 8, 16]):
        counted = [sum(t in active_tiers(s, freqs) for s in range(1, 41)) for t in range(len(freqs))]
        assert counted == update_counts(40, freqs)


def test_steps_count_from_one():
    with pytest.raises(ValueError, match="from 1"):
        active_tiers(0, [1, 2, 4])


@pytest.mark.parametrize("bad", [[], [0, 2], [1, -2], [1.5], [True, 2]])
def test_bad_frequencies_are_rejected(bad):
    with pytest.raises(ValueError, match="positive integers"):
        check_frequencies(bad)


NAMES = [f"base_model.model.model.layers.{i}.self_attn.q_proj.lora_{ab}.default.weight"
         for i in range(4) for ab in "AB"]


def test_tiers_by_depth_both_orders():
    shallow = tiers_by_depth(NAMES, 3, "shallow_fast")
    deep = tiers_by_depth(NAMES, 3, "deep_fast")
    assert [shallow[n] for n in NAMES[::2]] == [0, 0, 1, 2]
    assert [deep[n] for n in NAMES[::2]] == [2, 1, 0, 0]
    assert all(shallow[n] == shallow[n.replace("lora_A", "lora_B")] for n in NAMES[::2])


def test_unmapped_parameters_go_to_the_slowest_tier_with_a_warning():
    names = NAMES + ["model.embed_tokens.weight", "model.norm.weight"]
    with pytest.warns(UserWarning, match="model.embed_tokens.weight"):
        tiers = tiers_by_depth(names, 3)
    assert tiers["model.embed_tokens.weight"] == tiers["model.norm.weight"] == 2


def test_tiers_by_score_puts_the_largest_first():
    tiers = tiers_by_score({"a": 0.1, "b": 5.0, "c": 2.0, "d": 0.01, "e": 3.0, "f": 1.0}, 3)
    assert tier_members(tiers, 3) == [["b", "e"], ["c", "f"], ["a", "d"]]


def test_adapter_unit_joins_lora_a_and_b():
    assert adapter_unit(NAMES[0]) == adapter_unit(NAMES[1]) == "base_model.model.model.layers.0.self_attn.q_proj"
    assert adapter_unit("model.layers.0.mlp.up_proj.weight") == "model.layers.0.mlp.up_proj.weight"
    assert layer_of("model.layers.3.mlp.levels.1.up.weight") == 3


def test_tier_map_must_cover_exactly_the_trainable_parameters():
    params = {"a": torch.nn.Parameter(torch.zeros(2)), "b": torch.nn.Parameter(torch.zeros(2))}
    up = TieredUpdater([1, 2])
    up.attach(TorchBackend(), None, params)
    with pytest.raises(ValueError, match="missing"):
        up.set_map({"a": 0})
    with pytest.raises(ValueError, match="unknown"):
        up.set_map({"a": 0, "b": 1, "c": 1})
    with pytest.raises(ValueError, match="out of range"):
        up.set_map({"a": 0, "b": 2})
    up.set_map({"a": 0, "b": 1})
    assert up.members(0) == ["a"] and up.members(1) == ["b"]
    with pytest.raises(ValueError):
        TieredUpdater([1, 2], semantics="freeze")


def test_skip_asks_for_the_active_tiers_gradients_only_and_accumulate_for_all():
    params = {"a": torch.nn.Parameter(torch.zeros(2)), "b": torch.nn.Parameter(torch.zeros(2))}
    model = torch.nn.Module()
    model.a, model.b = params["a"], params["b"]
    up = TieredUpdater([1, 2], "skip")
    up.attach(TorchBackend(), model, params)
    assert up.grad_names() is None  # no tier map yet: everything updates
    up.set_map({"a": 0, "b": 1})
    up.begin_task()
    up.before_step(1)
    assert up.grad_names() == ["a"]
    up.before_step(2)
    assert up.grad_names() == ["a", "b"]
    up.end_task()
    acc = TieredUpdater([1, 2], "accumulate")
    acc.attach(TorchBackend(), model, params)
    acc.set_map({"a": 0, "b": 1})
    acc.before_step(1)
    assert acc.grad_names() is None  # accumulate computes every gradient at every step


def test_decoder_blocks_found_inside_peft_and_refused_elsewhere():
    _, model = make("layer_tiers")
    assert len(decoder_blocks(model)) == 4
    with pytest.raises(ValueError, match="no list of transformer blocks"):
        decoder_blocks(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    assert len(decoder_blocks(tiny_llama(layers=2))) == 2
