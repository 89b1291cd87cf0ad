"""Log-likelihood batches as token trees (``clbench.eval.token_tree``): one node per distinct prefix, the
right node predicting each scored token, rows split at their size limit — and scores that equal scoring
every request in its own sequence."""

import pytest
import torch

from clbench.eval import torch_lm
from clbench.eval.lm_view import LMView
from clbench.eval.requests import Group
from clbench.eval.token_tree import pack_groups


def group(context, *continuations):
    return Group(list(context), list(range(len(continuations))), [list(c) for c in continuations])


def test_a_context_and_a_template_shared_by_two_items_are_one_path():
    a = group([1, 2, 3, 4], [5], [6, 7])   # "template 1 2, item 3 4", choices "5" and "6 7"
    b = group([1, 2, 8], [9, 10, 11])       # same template, another item
    (row,) = pack_groups([a, b], max_nodes=100)
    # nodes: 1 2 3 4 (a's context), 6 (a's second choice but its last token), 8 (b's context), 9 10
    assert row.tokens == [1, 2, 3, 4, 6, 8, 9, 10]
    assert row.positions == [0, 1, 2, 3, 4, 2, 3, 4]
    assert row.parents == [-1, 0, 1, 2, 3, 1, 5, 6]
    # (node, target, continuation slot): a's two choices are slots 0 and 1, b's is slot 2
    assert row.predictions == [(3, 5, 0), (3, 6, 1), (4, 7, 1), (5, 9, 2), (6, 10, 2), (7, 11, 2)]


def test_new_nodes_counts_distinct_prefixes_only():
    row = pack_groups([group([1, 2, 3], [4])], max_nodes=100)[0]
    assert row.new_nodes([[1, 2, 3]]) == 0
    assert row.new_nodes([[1, 2, 5, 6], [1, 2, 5, 7]]) == 3  # 5, then 6 and 7 below it
    assert row.new_nodes([[9], [9, 8]]) == 2


def test_rows_are_split_at_their_size_and_a_large_group_gets_a_row_of_its_own():
    groups = [group([1, 2, 3], [4]), group([5, 6, 7], [8]), group([9, *range(20, 30)], [1])]
    rows = pack_groups(groups, max_nodes=6)
    assert [r.tokens for r in rows] == [[1, 2, 3, 5, 6, 7], [9, *range(20, 30)]]
    assert [p[2] for r in rows for p in r.predictions] == [0, 1, 2]  # slots keep counting across rows


def test_an_empty_context_is_refused():
    with pytest.raises(ValueError, match="non-empty context"):
        pack_groups([group([], [1, 2])], max_nodes=10)


class _Generic(LMView):
    """The backend-independent scoring: every context + continuation in its own padded row."""

    def forward_logprobs(self, seqs):
        return torch_lm.TorchLM.forward_logprobs(self, seqs)

    def _pad(self, seqs, left=False):
        return torch_lm.TorchLM._pad(self, seqs, left)

    @property
    def device(self):
        return torch.device("cpu")


@pytest.mark.parametrize("tree_nodes", [256, 7])
def test_tree_scores_equal_one_sequence_per_request(micro_model, monkeypatch, tree_nodes):
    """Shared templates, shared contexts, continuations sharing their first tokens, one-token ones, and
    (with ``TREE_NODES`` 7) a batch spread over several rows with padding."""
    monkeypatch.setattr(torch_lm, "TREE_NODES", tree_nodes)
    model, tok = micro_model
    prompts = ["the patient takes", "the patient feels", "the doctor says", "a meeting is on"]
    conts = [" one pill a day", " one pill", " two", " rest and water"]
    pairs = [(p, c) for p in prompts for c in conts]
    with torch.no_grad():
        with torch_lm.TorchLM(model, tok, batch_size=3) as lm:
            tree = lm.loglikelihood(pairs)
        generic = _Generic(model, tok, batch_size=3)
        with generic:
            flat = generic.loglikelihood(pairs)
    assert tree == pytest.approx(flat, rel=1e-5, abs=1e-5)
    assert len(set(tree)) == len(tree)  # every request got its own number
