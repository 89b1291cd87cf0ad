"""The trainer's batch stream (``clbench.data.encoding.batch_stream``): every example once per epoch, in
the seed's order, and with ``group_by_length`` the same examples in batches of similar length."""

import itertools

import pytest
import torch

from clbench.data.encoding import Encoded, batch_stream

PAD = 0


def examples(lengths):
    """Example i has token ids i+1 (so a batch says which examples it holds) repeated to its length."""
    return [Encoded([i + 1] * n, [i + 1] * n, False) for i, n in enumerate(lengths)]


def ids_of(batch):
    return [int(row[0]) - 1 for row in batch["input_ids"]]


def epochs(encoded, size, group, n_epochs, seed=3):
    per_epoch = len(encoded) // size
    stream = batch_stream(encoded, size, PAD, seed=seed, group_by_length=group)
    drawn = [next(stream) for _ in range(n_epochs * per_epoch)]
    return [drawn[e * per_epoch:(e + 1) * per_epoch] for e in range(n_epochs)]


LENGTHS = [3 + (7 * i) % 23 for i in range(100)]  # 3..25, every length several times


def test_ungrouped_batches_are_the_seeds_permutation_cut_in_order():
    size = 8
    gen = torch.Generator().manual_seed(3)
    for epoch in epochs(examples(LENGTHS), size, 0, 2):
        order = torch.randperm(len(LENGTHS), generator=gen).tolist()
        assert [ids_of(b) for b in epoch] == [order[i:i + size] for i in range(0, 96, size)]


@pytest.mark.parametrize("group", [2, 4, 100])
def test_grouping_keeps_each_epochs_examples_and_sorts_them_within_megabatches(group):
    size = 8
    encoded = examples(LENGTHS)
    (first_plain,), grouped = epochs(encoded, size, 0, 1), epochs(encoded, size, group, 3)
    # the first epoch holds the ungrouped epoch's examples (the same remainder dropped), megabatch by megabatch
    for m in range(0, len(first_plain), group):
        assert (sorted(i for b in grouped[0][m:m + group] for i in ids_of(b))
                == sorted(i for b in first_plain[m:m + group] for i in ids_of(b)))
    for epoch in grouped:
        seen = [i for b in epoch for i in ids_of(b)]
        assert len(seen) == len(set(seen)) == 96  # every kept example exactly once per epoch
        for m in range(0, len(epoch), group):
            # batches are consecutive runs of the megabatch's sorted lengths: no batch straddles another's range
            spans = sorted((min(LENGTHS[i] for i in ids_of(b)), max(LENGTHS[i] for i in ids_of(b)))
                           for b in epoch[m:m + group])
            assert all(hi <= lo for (_, hi), (lo, _) in itertools.pairwise(spans))


def test_grouping_pads_less_and_does_not_train_a_megabatch_longest_first():
    size = 8
    encoded = examples(LENGTHS)

    def padding(batches):
        return 1 - sum(int(b["attention_mask"].sum()) for b in batches) / sum(b["input_ids"].numel() for b in batches)

    plain, grouped = epochs(encoded, size, 0, 6), epochs(encoded, size, 4, 6)
    assert padding([b for e in grouped for b in e]) < 0.5 * padding([b for e in plain for b in e])
    # the batch order within a megabatch is drawn, not sorted (transformers' sampler goes longest first)
    widths = [[b["input_ids"].shape[1] for b in e[m:m + 4]] for e in grouped for m in range(0, 12, 4)]
    assert any(w != sorted(w) for w in widths) and any(w != sorted(w, reverse=True) for w in widths)


def test_grouped_stream_is_reproducible_and_depends_on_the_seed():
    encoded = examples(LENGTHS)
    a, b = epochs(encoded, 8, 4, 2, seed=5), epochs(encoded, 8, 4, 2, seed=5)
    c = epochs(encoded, 8, 4, 2, seed=6)
    flat = [[ids_of(x) for x in e] for e in a]
    assert flat == [[ids_of(x) for x in e] for e in b] != [[ids_of(x) for x in e] for e in c]


def test_a_negative_group_is_refused():
    with pytest.raises(ValueError, match="group_by_length"):
        next(batch_stream(examples([3, 4]), 2, PAD, seed=0, group_by_length=-1))
