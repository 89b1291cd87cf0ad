"""What a probe kind is, in one table: every module that treats kinds differently reads it from here.

A probe suite's ``kind`` decides the fields of its items (checked when the stream is read,
``clbench.data.streams``), the suite of that kind a generated task brings, how an item is scored and how
the items' records make the suite's score (``clbench.eval.probes``; the known subset and the per-category
scores, ``clbench.results.breakdown``; the bootstrap over items, ``clbench.reporting.bootstrap``), whether a
higher score is better, whether its prompts are wrapped in an instruct model's chat template
(``clbench.modeling.chat``), and whether the MLX backend scores it natively.

The table sits on the data floor (``tests/test_architecture.py``) so that the stream reader can read it;
the scorers themselves live in ``clbench.eval.probes`` (they need a model), one per native kind here.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProbeKind:
    name: str
    fields: dict[str, type] = field(default_factory=dict)  # required item fields
    # optional item fields: other accepted spellings of an exact-match answer; a category, for per-category
    # scores (clbench.results.breakdown)
    optional: dict[str, type] = field(default_factory=dict)
    generated_suite: str | None = None  # the suite of this kind a generated task brings (``qa``, ...)
    higher_is_better: bool | None = None  # None: the suite's own (an lm-eval task's metric)
    # how item records make the suite's score: "mean" (each item right or wrong: the mean of 0/1, the share
    # right), "perplexity" (exp of total NLL over total tokens), None (no per-item records: lm-eval's own)
    aggregation: str | None = None
    chat_wrapped: bool = False  # its prompts become a user turn under model.use_chat_template
    mlx: bool = False  # scored by the MLX backend's own probe view

    @property
    def right_or_wrong(self) -> bool:
        """Whether each item is scored right or wrong (so a known subset of items exists)."""
        return self.aggregation == "mean"


PROBE_KINDS: dict[str, ProbeKind] = {k.name: k for k in (
    ProbeKind("exact_match", {"prompt": str, "answer": str}, {"aliases": list, "category": str},
              generated_suite="qa", higher_is_better=True, aggregation="mean", chat_wrapped=True, mlx=True),
    ProbeKind("multiple_choice", {"prompt": str, "choices": list, "label": int}, {"category": str},
              generated_suite="mc", higher_is_better=True, aggregation="mean", chat_wrapped=True, mlx=True),
    ProbeKind("perplexity", {"text": str}, {"category": str},
              generated_suite="ppl", higher_is_better=False, aggregation="perplexity", mlx=True),
    # lm-eval's evaluator scores it; lm-eval applies the chat template itself (its apply_chat_template)
    ProbeKind("lm_eval"),
)}
# the kinds clbench scores itself, from items in the stream file (every kind but lm_eval)
NATIVE_KINDS = tuple(k for k, p in PROBE_KINDS.items() if p.fields)
# the kinds with a known subset (clbench.results.breakdown, clbench.run.base_scores)
RIGHT_OR_WRONG_KINDS = tuple(k for k, p in PROBE_KINDS.items() if p.right_or_wrong)
CHAT_WRAPPED_KINDS = tuple(k for k, p in PROBE_KINDS.items() if p.chat_wrapped)
MLX_KINDS = tuple(k for k, p in PROBE_KINDS.items() if p.mlx)


def aggregation(kind: str) -> str | None:
    """How the items of a suite of ``kind`` make its score (None for a kind with no per-item records or an
    unknown one, as a stored matrix may name)."""
    return PROBE_KINDS[kind].aggregation if kind in PROBE_KINDS else None
