"""How probe requests are tokenized, ordered and batched — the same for every backend.

A model view (``clbench.eval.lm_view.LMView``) answers three questions; what makes them fast is mostly
bookkeeping that does not depend on the array library, so it lives here once and the torch and MLX
views share it:

* :func:`encode_pair` tokenizes a ``(context, continuation)`` request exactly as lm-eval does, so
  native scores equal lm-eval's on the same items even where a token merges across the boundary;
* :func:`group_requests` puts the continuations of one context (the choices of a multiple-choice item)
  into one :class:`Group`, so a backend can run the shared context once and reuse it for every choice,
  and orders the groups longest first (as lm-eval's ``Collator``) so a batch pads to similar lengths;
  :func:`chunks` cuts a batch into forward passes of at most ``batch_size`` rows;
* :func:`longest_first` / :func:`same_length_batches` batch plain sequences (perplexity texts,
  generation prompts) by length;
* :func:`cut_at_newline` / :func:`answer_ended` are the stopping rule of greedy generation: a continuation
  ends at EOS, at the first newline (what follows the newline is discarded), or once the suite's
  ``until`` strings have settled where the answer is cut (``clbench.eval.probes.cut_at``), so
  decoding of a sequence can stop as soon as nothing it could still generate changes its answer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """``(context ids, continuation ids)`` as lm-eval's ``TemplateLM.loglikelihood`` builds them.

    Trailing whitespace of the context moves to the continuation; the whole text is encoded and the
    continuation is what follows the context's own encoding (so a boundary merge gives the context's
    tokens plus the whole text's tail, as lm-eval scores it). An empty context is the prefix token
    (BOS, else EOS). Written out rather than imported because importing lm-eval costs seconds and the
    MLX backend does not need it; ``tests/test_native_vs_lm_eval.py`` checks it against lm-eval's.
    """
    if not context:
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        return [prefix], encode_text(tokenizer, continuation)
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = encode_text(tokenizer, context + continuation)
    ctx = encode_text(tokenizer, context)
    return ctx, whole[len(ctx):]


def encode_text(tokenizer, text: str) -> list[int]:
    """Token ids of a prompt or request text: the tokenizer's own default for special tokens, except
    that a text already starting with BOS (a chat template's) gets no second one (lm-eval's HFLM rule)."""
    bos = tokenizer.bos_token
    if bos and text.startswith(bos):
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(text)["input_ids"]


@dataclass
class Group:
    """The requests that share a context: ``members[i]`` is the request index whose continuation is
    ``continuations[i]``."""

    context: list[int]
    members: list[int] = field(default_factory=list)
    continuations: list[list[int]] = field(default_factory=list)


def group_requests(requests: Sequence[tuple[list[int], list[int]]], batch_size: int) -> list[list[Group]]:
    """Batches of at most ``batch_size`` context groups; every request with the same context tokens is
    in one group.

    Groups are ordered longest first (context plus all its continuations: the length of the group
    packed into one row; ties by the tokens, so the order is deterministic, and equal-length contexts
    with a common prefix end up side by side), and within a group the longer continuations come first.
    """
    by_context: dict[tuple[int, ...], Group] = {}
    for i, (ctx, _) in enumerate(requests):
        by_context.setdefault(tuple(ctx), Group(list(ctx))).members.append(i)
    for g in by_context.values():
        g.members.sort(key=lambda i: (-len(requests[i][1]), i))
        g.continuations = [list(requests[i][1]) for i in g.members]
    order = sorted(by_context.values(),
                   key=lambda g: (-(len(g.context) + sum(len(c) for c in g.continuations)), g.context))
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def chunks(n: int, size: int) -> list[range]:
    """``range(n)`` in consecutive pieces of at most ``size``."""
    return [range(s, min(s + size, n)) for s in range(0, n, size)]


def per_group(groups: Sequence[Group], flat: Sequence[float]) -> list[list[float]]:
    """Split one score per continuation (in group order) back into one list per group."""
    out, k = [], 0
    for g in groups:
        out.append(list(flat[k : k + len(g.continuations)]))
        k += len(g.continuations)
    return out


def longest_first(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Index batches of at most ``batch_size``, longest first (stable for equal lengths)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def same_length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Index batches whose members all have the same length (for a backend without a padding mask)."""
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, n in enumerate(lengths):
        by_length[n].append(i)
    return [members[s : s + batch_size] for _, members in sorted(by_length.items(), reverse=True)
            for s in range(0, len(members), batch_size)]


def answer_ended(text: str, until: Sequence[str] = (), tail: int = 0) -> bool:
    """Whether a decoded continuation has reached the end of its answer, so that no token generated
    after it could change what is scored.

    The answer is ``cut_at(cut_at_newline(text), until)`` (``clbench.eval.probes``). A newline ends it
    (the rule without ``until``). With ``until``, it is also ended once an ``until`` string occurs at
    ``p`` (the earliest) and no ``until`` string could still complete at a position before ``p``: an
    occurrence starting before ``p`` that is not complete yet is a proper prefix of the text's end
    (``until=["b", "xby"]``: ``"xb"`` is not ended, a ``"y"`` would cut at ``x``). Everything before
    ``p`` is then final: a continuation's decoded text only grows at its end, except for

    * trailing U+FFFD, the stand-in for a character whose bytes are not all generated yet (ignored here:
      the text is judged without it), and
    * ``tail`` characters that a tokenizer's clean-up of spaces may still change (``" ."`` becomes
      ``"."`` once the period is generated; :func:`unstable_tail` gives the width), which are judged as
      not yet generated.
    """
    if "\n" in text:
        return True
    if not until:
        return False
    text = text.rstrip("\ufffd")
    if tail:
        text = text[: max(0, len(text) - tail)]
    ends = [i for i in (text.find(u) for u in until) if i >= 0]
    if not ends:
        return False
    p = min(ends)
    return not any(u.startswith(text[q:]) for u in until for q in range(max(0, len(text) - len(u) + 1), p))


def unstable_tail(tokenizer) -> int:
    """How many trailing characters of a decoded prefix later tokens may still change: 4 where the
    tokenizer cleans up tokenization spaces on decode (its patterns, such as ``" n't"`` -> ``"n't"``,
    are at most 4 characters and delete a space inside them), else 0."""
    return 4 if getattr(tokenizer, "clean_up_tokenization_spaces", False) else 0


def cut_at_newline(text: str) -> str:
    return text.split("\n")[0]
