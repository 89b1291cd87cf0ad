"""One probe-kind table (``clbench.data.probe_kinds``): the stream reader, the scorers, the breakdown, the
bootstrap, the chat wrapping and the MLX backend all follow it, so a kind is described in one place."""

from __future__ import annotations

import math

import pytest

from clbench.data.probe_kinds import (
    CHAT_WRAPPED_KINDS,
    MLX_KINDS,
    NATIVE_KINDS,
    PROBE_KINDS,
    RIGHT_OR_WRONG_KINDS,
)
from clbench.data.streams import GENERATED_SUITES, ProbeSuite, load_stream
from clbench.errors import ConfigError
from clbench.eval.probes import SCORERS, higher_is_better, score_suite
from clbench.reporting.bootstrap import ITEM_KINDS
from clbench.results.breakdown import subset_score
from tests.test_probes import FixedAnswers


def test_the_table_names_every_kind_once_and_each_has_a_scorer():
    assert list(PROBE_KINDS) == ["exact_match", "multiple_choice", "perplexity", "lm_eval"]
    assert NATIVE_KINDS == ("exact_match", "multiple_choice", "perplexity")
    assert set(SCORERS) == set(PROBE_KINDS)
    assert GENERATED_SUITES == {"qa": "exact_match", "mc": "multiple_choice", "ppl": "perplexity"}
    assert RIGHT_OR_WRONG_KINDS == CHAT_WRAPPED_KINDS == ("exact_match", "multiple_choice")
    assert ITEM_KINDS == {"exact_match": "mean", "multiple_choice": "mean", "perplexity": "perplexity"}


def test_direction_comes_from_the_table_or_the_lm_eval_metric():
    assert [higher_is_better(ProbeSuite("s", k, ())) for k in NATIVE_KINDS] == [True, True, False]
    assert higher_is_better(ProbeSuite("s", "lm_eval", (), {"higher_is_better": False})) is False
    with pytest.raises(ValueError, match=r"unknown probe kind 'exact'; known: \['exact_match', 'multiple_choice', "
                                         r"'perplexity', 'lm_eval'\]"):
        score_suite(ProbeSuite("s", "exact", ()), FixedAnswers())


@pytest.mark.parametrize("kind,view", [
    ("exact_match", FixedAnswers(generations=["a", "x", "c"])),
    ("multiple_choice", FixedAnswers(loglikelihoods=[-1.0, -2.0, -3.0, -0.5, -1.0, -4.0])),
    ("perplexity", FixedAnswers(nlls=[(3.0, 2), (1.0, 5), (7.5, 4)])),
])
def test_the_tables_aggregation_rebuilds_the_scorers_score_from_the_items(kind, view):
    """The breakdown rebuilds scores from stored item records by the table's aggregation: it must give the
    scorer's own score (a perplexity averaged per item, or an accuracy weighted by tokens, would not)."""
    items = {"exact_match": [{"id": str(i), "prompt": "Q", "answer": a} for i, a in enumerate("abc")],
             "multiple_choice": [{"id": str(i), "prompt": "Q", "choices": ["x", "y"], "label": 0} for i in range(3)],
             "perplexity": [{"id": str(i), "text": "t"} for i in range(3)]}[kind]
    result = score_suite(ProbeSuite("s", kind, tuple(items)), view)
    assert subset_score(result.items, kind) == pytest.approx(result.score, rel=1e-12)
    assert not math.isclose(result.score, 1.0)  # a case where the items disagree


def test_an_unknown_kind_in_a_stream_file_names_the_tables_kinds(tmp_path):
    (tmp_path / "s.yaml").write_text("name: s\ntasks:\n  - name: t\n    generated: {domain: notes, entities: 2}\n"
                                     "    probes: [{name: x, kind: exact, path: x.jsonl}]\n")
    with pytest.raises(ConfigError) as err:
        load_stream(str(tmp_path / "s.yaml"))
    assert err.value.allowed == sorted(PROBE_KINDS)


def test_the_mlx_backend_scores_the_kinds_the_table_says():
    pytest.importorskip("mlx.core")
    from clbench.backends.mlx.backend import MLX_PROBE_KINDS

    assert MLX_PROBE_KINDS == MLX_KINDS == ("exact_match", "multiple_choice", "perplexity")
