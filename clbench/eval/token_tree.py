"""A batch of log-likelihood requests as token trees: every distinct prefix computed once.

A multiple-choice batch is many sequences that share most of their tokens: the choices of an item share
its context, and the contexts of a suite share its prompt template ("The capital of … is"). A causal LM's
state at a token depends only on the tokens before it, so the requests of a batch can be merged into a
trie — one node per distinct prefix — and run as one sequence in which each node attends to itself and to
its ancestors only (a tree-shaped attention mask, each node at the position it has in its own sequence).
Every request is then scored exactly as in its own ``context + continuation`` sequence (up to float
rounding), and a batch costs its distinct tokens rather than its padded rows: on 32 items of the real
stream's world suite, 243 nodes against 1,024 tokens of lm-eval's requests and 432 of one padded row per
item.

A tree row holds at most ``max_nodes`` nodes (attention costs the square of a row's length); groups that
do not fit start a new row. Padding is the model's business (``clbench.eval.torch_lm``), not this module's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from clbench.eval.requests import Group


@dataclass
class TreeRow:
    """One row of the packed batch: ``tokens[i]`` at position ``positions[i]``, attending to its
    ancestors (``parents[i]``: the index of the node before it, -1 for a first token) and to itself;
    ``predictions``: ``(node, target token, slot)`` — the node whose output predicts ``target``, a token of
    the continuation ``slot`` (continuations numbered over the batch's groups in order)."""

    tokens: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    predictions: list[tuple[int, int, int]] = field(default_factory=list)
    _children: dict[tuple[int, int], int] = field(default_factory=dict)

    def new_nodes(self, seqs: Sequence[Sequence[int]]) -> int:
        """How many nodes adding ``seqs`` (each a path from the root) would create."""
        new: set[tuple[int, ...]] = set()
        for seq in seqs:
            node: int | None = -1
            for t, tok in enumerate(seq):
                node = self._children.get((node, tok)) if node is not None else None
                if node is None:  # off the row's tree: this prefix and every longer one are new
                    new.add(tuple(seq[: t + 1]))
        return len(new)

    def node(self, parent: int, token: int) -> int:
        """The node of ``token`` after ``parent`` (made if the row has none yet)."""
        key = (parent, token)
        if key not in self._children:
            self._children[key] = len(self.tokens)
            self.tokens.append(token)
            self.positions.append(self.positions[parent] + 1 if parent >= 0 else 0)
            self.parents.append(parent)
        return self._children[key]

    def path(self, seq: Sequence[int]) -> int:
        """The node of ``seq``'s last token, following (and making) its nodes from the root."""
        node = -1
        for tok in seq:
            node = self.node(node, tok)
        return node


def group_paths(g: Group) -> list[list[int]]:
    """The sequences a group adds to a tree: its context, and the context followed by each continuation
    but its last token (a continuation's last token predicts nothing that is scored)."""
    return [list(g.context)] + [list(g.context) + list(c[:-1]) for c in g.continuations if len(c) > 1]


def pack_groups(groups: Sequence[Group], max_nodes: int) -> list[TreeRow]:
    """The groups' requests as token-tree rows of at most ``max_nodes`` nodes each (a group larger than
    that gets a row of its own), in order; each prediction names its continuation's slot."""
    rows: list[TreeRow] = []
    slot = 0
    for g in groups:
        if not g.context:
            raise ValueError("a log-likelihood request needs a non-empty context (lm-eval gives it the EOT token)")
        paths = group_paths(g)
        if not rows or (rows[-1].tokens and len(rows[-1].tokens) + rows[-1].new_nodes(paths) > max_nodes):
            rows.append(TreeRow())
        row = rows[-1]
        last = row.path(g.context)
        for cont in g.continuations:
            if cont:
                row.predictions.append((last, cont[0], slot))
            node = last
            for t in range(len(cont) - 1):
                node = row.node(node, cont[t])
                row.predictions.append((node, cont[t + 1], slot))
            slot += 1
    return rows
