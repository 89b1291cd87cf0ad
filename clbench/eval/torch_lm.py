"""The three questions a probe asks a language model, answered for a torch causal LM.

Probe scoring (``clbench.eval.probes``) only calls these methods, so another backend (MLX) is a class with the
same three methods; the scoring rules stay in one place, and the tokenizing, grouping and batching of
the requests is ``clbench.eval.lm_view.LMView``'s and ``clbench.eval.requests``' (this class gives the model
calls).

* :meth:`TorchLM.generate` — greedy continuation of each prompt, cut at the first newline (decoding may stop
  earlier, at the suite's ``until`` strings);
* :meth:`TorchLM.loglikelihood` — summed log-probability of a continuation given a context;
* :meth:`TorchLM.token_nll` — summed negative log-likelihood of a whole text and its token count.

What makes it fast, none of which changes a score beyond float rounding:

* only the logits of predicted tokens are read, as ``logit[target] - logsumexp(logits)`` (no
  ``log_softmax`` array over the whole vocabulary at every position), and the context pass computes
  the output layer at its last position only (``logits_to_keep``);
* a batch of log-likelihood requests runs as token trees (``clbench.eval.token_tree``): every distinct
  prefix once — an item's context once for all its choices, a suite's prompt template once for the batch
  — each token attending to its own ancestors only (a tree-shaped 4-D attention mask, positions given
  explicitly), where lm-eval runs one padded row of context plus choice per choice;
* requests are ordered by length, so a batch pads to similar lengths;
* greedy generation is a decoding loop of its own (:meth:`TorchLM._greedy`): a sequence stops as soon as
  it has produced EOS, a newline, or an ``until`` string of the suite that settles where its answer is
  cut (what follows is discarded anyway), and then leaves the batch and its KV cache, so later steps
  compute the unfinished sequences only, and the next prompts join the running batch once half of it
  has left — Hugging Face ``generate`` runs every row until the last one has ended.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from contextlib import ExitStack

import torch
from transformers import DynamicLayer, GenerationConfig, StoppingCriteria, StoppingCriteriaList

from clbench.eval.lm_view import LMView
from clbench.eval.requests import (
    Group,
    answer_ended,
    cut_at_newline,
    encode_text,
    longest_first,
    per_group,
    unstable_tail,
)
from clbench.eval.token_tree import group_paths, pack_groups
from clbench.modeling import frozen_cast
from clbench.modeling.loading import autocast_context


class TorchLM(LMView):
    """Probe-facing view of a (possibly peft-wrapped) Hugging Face causal LM; a context manager that
    puts the model in eval mode (``LMView``) and, with ``autocast`` (a dtype), computes inside
    ``torch.autocast`` (the run's mixed precision, ``model.autocast``; log-probabilities are taken from
    float32 logits either way) with the model's float32 Linear weights but ``keep`` held in that dtype
    while the view is open (``clbench.modeling.frozen_cast``: autocast would cast every weight again at
    every forward pass, each greedy decoding step included; bitwise the same scores). ``keep``: weights
    that change while the view is open (a memory that learns at test time)."""

    def __init__(self, model, tokenizer, batch_size: int = 64, autocast: torch.dtype | None = None, keep=()):
        super().__init__(model, tokenizer, batch_size)
        self.autocast = autocast
        self.keep = list(keep)
        self._contexts = ExitStack()

    def __enter__(self):
        super().__enter__()
        self._contexts.enter_context(autocast_context(self.device, self.autocast))
        self._contexts.enter_context(frozen_cast.frozen_weights_cast(self.model, self.autocast, self.keep,
                                                                     trainable_too=True))
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._contexts.__exit__(*exc)
        finally:
            super().__exit__(*exc)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _pad(self, seqs: list[list[int]], left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            cols = slice(width - len(s), width) if left else slice(0, len(s))
            ids[i, cols] = torch.tensor(s, dtype=torch.long)
            mask[i, cols] = 1
        return ids.to(self.device), mask.to(self.device)

    @torch.no_grad()
    def forward_logprobs(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs of each next token for right-padded ``seqs``: ``(logp[b, t], mask[b, t])``."""
        ids, mask = self._pad(seqs)
        logits = self.model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        return _picked_logprobs(logits, ids[:, 1:]).cpu(), mask[:, 1:].cpu()

    @torch.no_grad()
    def next_token_logprobs(self, seqs: list[list[int]]) -> list[torch.Tensor]:
        """``log_softmax`` of the float32 logits at each position that predicts a token of its sequence."""
        ids, mask = self._pad(seqs)
        logits = self.model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        logp = torch.log_softmax(logits, dim=-1).cpu()
        return [logp[i, :len(s) - 1].clone() for i, s in enumerate(seqs)]

    @torch.no_grad()
    def score_groups(self, groups: list[Group]) -> list[list[float]]:
        """Every continuation of every group scored in one forward pass, as token trees.

        The batch's requests are merged into tries (``clbench.eval.token_tree``: one node per distinct
        prefix — an item's context once for all its choices, a suite's prompt template once for the
        batch) of at most ``TREE_NODES`` nodes a row; each node attends to its ancestors and itself (a
        tree-shaped 4-D attention mask) at the position it has in its own sequence, so each continuation is
        scored exactly as in its own ``context + continuation`` sequence; the output layer runs only at
        the nodes whose next token is scored.
        """
        longest = max(len(p) for g in groups for p in group_paths(g))
        rows = pack_groups(groups, max(TREE_NODES, longest))
        scores = torch.zeros(sum(len(g.continuations) for g in groups), dtype=torch.float32, device=self.device)
        if not any(r.predictions for r in rows):  # every continuation merged into its context: nothing to score
            return per_group(groups, scores.cpu().tolist())
        width = max(len(r.tokens) for r in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        pos = torch.zeros((len(rows), width), dtype=torch.long)
        allowed = torch.eye(width, dtype=torch.bool).repeat(len(rows), 1, 1)  # padding sees itself only
        for i, r in enumerate(rows):
            n = len(r.tokens)
            ids[i, :n] = torch.tensor(r.tokens)
            pos[i, :n] = torch.tensor(r.positions)
            allowed[i, :n, :n] = _ancestors(r.parents)
        dtype = next(self.model.parameters()).dtype
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]
        needed = sorted({node for r in rows for node, _, _ in r.predictions})
        keep = self._logits_from(torch.tensor(needed, device=self.device))
        logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                            position_ids=pos.to(self.device), use_cache=False, **keep).logits
        column = {node: k for k, node in enumerate(needed)} if keep else {node: node for node in needed}
        preds = [(i, column[node], tok, slot) for i, r in enumerate(rows) for node, tok, slot in r.predictions]
        row, col, target, slot = (torch.tensor(x, device=self.device) for x in zip(*preds))
        scores.index_add_(0, slot, _picked_logprobs(logits[row, col], target))
        return per_group(groups, scores.cpu().tolist())

    def _logits_from(self, positions: torch.Tensor | int) -> dict:
        """``logits_to_keep=positions`` (an int: the last ones) where the model's forward takes it, as
        transformers' causal LMs do; otherwise nothing (the caller slices the full logits)."""
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        return {"logits_to_keep": positions} if "logits_to_keep" in inspect.signature(base.forward).parameters else {}

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], max_new_tokens: int = 12, until: Sequence[str] = ()) -> list[str]:
        """Greedy continuation of each prompt, decoded and cut at the first newline (not at ``until``: the
        caller cuts there, ``clbench.eval.probes.cut_at``); prompts of similar length share a batch.

        A sequence stops at EOS, a newline, or once the ``until`` strings have settled where its answer
        is cut (``clbench.eval.requests.answer_ended``), so the returned text may end just after an
        ``until`` string instead of running on to the newline; the answer cut from it is the same.
        Decoding is :meth:`_greedy` where the model allows it, else Hugging Face ``generate``
        (``_lean_decoding``).
        """
        tok = self.tokenizer
        tail = unstable_tail(tok)

        def ended(tokens: list[int]) -> bool:
            return answer_ended(tok.decode(tokens, skip_special_tokens=True), until, tail)

        encoded = [encode_text(tok, p) for p in prompts]
        batches = longest_first([len(e) for e in encoded], self.batch_size)
        if self._lean_decoding():
            gen = self._greedy(encoded, [i for rows in batches for i in rows], max_new_tokens, ended)
        else:
            gen = [[] for _ in encoded]
            for rows in batches:
                for i, tokens in zip(rows, self._hf_generate([encoded[i] for i in rows], max_new_tokens, ended)):
                    gen[i] = tokens
        return [cut_at_newline(tok.decode(tokens, skip_special_tokens=True)) for tokens in gen]

    def _greedy(self, prompts: list[list[int]], order: list[int], max_new_tokens: int, ended) -> list[list[int]]:
        """Greedy tokens of each prompt, each ending with (and including) the token at which ``ended``
        first holds or EOS, or after ``max_new_tokens``; prompts enter the running batch in ``order``,
        at most ``batch_size`` rows at a time.

        Written out instead of calling Hugging Face ``generate`` because ``generate`` keeps every row of
        a batch until the last one has ended (finished rows go on being computed, fed padding), and a
        new batch starts only then. Here a row that has ended leaves the batch and its KV cache
        (``batch_select_indices``), so each step runs the unfinished rows only, and once half the rows
        have left, the next prompts are run (one forward pass over them) and join the running batch
        (``_Running.join``), so the batch stays full instead of waiting for its slowest row: a decoding
        step costs about the same for 1 row as for 16 (reading the weights dominates), so steps with
        full rows are what saves time. A row's tokens do not depend on the rows beside it (beyond float
        rounding, as in any batch), so this changes no answer.

        Otherwise it is what ``generate`` does for greedy decoding: a prompt batch is left-padded and run
        once (logits at the last position only; no mask when nothing is padded, as ``generate`` drops an
        all-ones mask), positions are counted over the real tokens (``cumsum(mask) - 1``), each step
        feeds the chosen token at the next position with the mask grown by one column, and the token is
        ``argmax`` of the float32 logits (ties: the first index). ``_lean_decoding`` checks that
        ``generate`` would add nothing else (no logits processor from the model's generation config).
        """
        eos = self.tokenizer.eos_token_id
        queue = list(reversed(order))  # popped from the end: ``order`` first to last
        generated: list[list[int]] = [[] for _ in prompts]
        run: _Running | None = None
        while True:
            if queue and (run is None or (run.can_join and len(run.live) <= self.batch_size // 2)):
                new = self._prefill([queue.pop() for _ in range(min(len(queue), self.batch_size - len(run.live)
                                                                     if run else self.batch_size))], prompts)
                run = new if run is None or not run.live else run.join(new)
            if run is None or not run.live:
                break
            run.tokens = run.logits.to(torch.float32).argmax(-1)
            keep = []
            for row, (i, t) in enumerate(zip(run.live, run.tokens.tolist())):
                if i < 0:
                    continue  # an ended row of a cache that cannot drop rows
                generated[i].append(t)
                if t != eos and len(generated[i]) < max_new_tokens and not ended(generated[i]):
                    keep.append(row)
            if not keep:
                run = None  # every row has ended
                continue
            run.keep(keep)
            run.step(self.model)
        return generated

    def _prefill(self, rows: list[int], prompts: list[list[int]]) -> _Running:
        """The prompts ``rows`` run as one left-padded batch: a :class:`_Running` batch with their KV cache
        and the logits of their first generated token."""
        ids, mask = self._pad([prompts[i] for i in rows], left=True)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        out = self.model(input_ids=ids, attention_mask=None if bool(mask.all()) else mask, position_ids=positions,
                         use_cache=True, **self._logits_from(1))
        return _Running(out.cache, mask, positions[:, -1:] + 1, out.logits[:, -1], list(rows))

    def _hf_generate(self, prompts: list[list[int]], max_new_tokens: int, ended) -> list[list[int]]:
        """:meth:`_greedy`'s tokens by Hugging Face ``generate`` (for a model it cannot run), stopped once
        every row has ended (a row that has ended is fed padding, skipped when decoded)."""
        tok = self.tokenizer
        ids, mask = self._pad(prompts, left=True)
        gen = self.model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
            stopping_criteria=StoppingCriteriaList([_AnswerEnded(ids.shape[1], ended)]),
        )
        return [row.tolist() for row in gen[:, ids.shape[1]:]]

    def _lean_decoding(self) -> bool:
        """Whether :meth:`_greedy` gives what ``generate`` gives: a decoder-only model whose forward takes a
        cache and positions, and a generation config that asks for nothing greedy decoding would add
        (repetition penalty, suppressed or forced tokens, beams, a static cache...): every field is
        either one greedy decoding ignores or at its default."""
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        config = getattr(base, "generation_config", None)
        if config is None or getattr(base.config, "is_encoder_decoder", False):
            return False
        if not {"cache", "position_ids", "attention_mask", "use_cache"} <= set(inspect.signature(base.forward).parameters):
            return False
        default = GenerationConfig()
        return all(k in _GREEDY_IGNORES or getattr(default, k, None) == v for k, v in config.to_diff_dict().items())


# generation-config fields that do not change greedy decoding as TorchLM asks for it (its own EOS and
# padding, do_sample=False: sampling settings are unused)
_GREEDY_IGNORES = frozenset({
    "bos_token_id", "eos_token_id", "pad_token_id", "use_cache", "output_attentions", "output_hidden_states",
    "output_scores", "output_logits", "return_dict_in_generate", "transformers_version", "_from_model_config",
    "max_length", "max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "min_p", "typical_p",
    "epsilon_cutoff", "eta_cutoff",
})


class _Running:
    """The running batch of :meth:`TorchLM._greedy`: its KV cache, 2-D attention mask (left padding),
    the position of each row's next token, the logits of each row's next token and the token chosen
    from them, and the prompt of each row (``live``; -1 for a row that has ended in a cache that cannot
    drop rows).

    Every row's cache ends at its latest token (all rows advance one token per step), so rows of two
    batches line up at the right: :meth:`join` left-pads the shorter cache with zeros that the mask
    hides. Joining and dropping leading columns touch the cache's layers directly, so they are done only
    for a plain ``DynamicCache`` (``can_join``); any cache with ``batch_select_indices`` can drop rows.
    """

    def __init__(self, cache, mask: torch.Tensor, at: torch.Tensor, logits: torch.Tensor, live: list[int]):
        self.cache, self.mask, self.at, self.logits, self.live = cache, mask, at, logits, live
        self.tokens = torch.zeros(0, dtype=torch.long)
        self.can_drop = hasattr(cache, "batch_select_indices")
        layers = getattr(cache, "layers", None)
        self.can_join = bool(layers) and all(type(la) is DynamicLayer and la.is_initialized for la in layers)

    def keep(self, rows: list[int]) -> None:
        """Keep the running batch's ``rows`` only, then drop the leading columns no kept row attends to."""
        if len(rows) == len(self.live):
            return
        if not self.can_drop:
            kept = set(rows)
            self.live = [i if r in kept else -1 for r, i in enumerate(self.live)]
            return
        self.live = [self.live[r] for r in rows]
        index = torch.tensor(rows, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask, self.at, self.tokens = self.mask[index], self.at[index], self.tokens[index]
        if self.can_join:
            unused = int(self.mask.any(0).long().argmax())  # leading columns that are padding in every row
            if unused:
                for layer in self.cache.layers:
                    layer.keys, layer.values = layer.keys[..., unused:, :], layer.values[..., unused:, :]
                self.mask = self.mask[:, unused:]

    def join(self, other: _Running) -> _Running:
        """This batch's rows followed by ``other``'s, in one cache (both must be ``can_join``)."""
        if not (self.can_join and other.can_join):
            raise ValueError("only plain DynamicCache batches can be joined")
        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.keys = torch.cat([_left_pad(mine.keys, width), _left_pad(theirs.keys, width)])
            mine.values = torch.cat([_left_pad(mine.values, width), _left_pad(theirs.values, width)])
        self.mask = torch.cat([_left_pad(self.mask, width, dim=-1), _left_pad(other.mask, width, dim=-1)])
        self.at = torch.cat([self.at, other.at])
        self.logits = torch.cat([self.logits, other.logits])
        self.live = self.live + other.live
        return self

    def step(self, model) -> None:
        """Run each row's chosen token at its next position; the logits of the token after it."""
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=-1)
        out = model(input_ids=self.tokens[:, None], attention_mask=None if bool(self.mask.all()) else self.mask,
                    position_ids=self.at, cache=self.cache, use_cache=True)
        self.logits, self.at = out.logits[:, -1], self.at + 1


def _left_pad(x: torch.Tensor, width: int, dim: int = -2) -> torch.Tensor:
    """``x`` with zeros before it along ``dim`` up to ``width``."""
    missing = width - x.shape[dim]
    if not missing:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x.new_zeros(shape), x], dim=dim)


TREE_NODES = 256  # nodes of one token-tree row at most (a row's attention costs its length squared)


def _ancestors(parents: list[int]) -> torch.Tensor:
    """``m[q, k]``: node ``k`` is ``q`` or one of its ancestors (parents come before their children)."""
    n = len(parents)
    m = torch.zeros((n, n), dtype=torch.bool)
    for q, parent in enumerate(parents):
        if parent >= 0:
            m[q] = m[parent]
        m[q, q] = True
    return m


def _picked_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits)[target]`` at every position, without the vocabulary-wide array."""
    logits = logits.float()
    return logits.gather(-1, targets[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


class _AnswerEnded(StoppingCriteria):
    """Per row: has the generated text ended (``ended``, given its tokens)? (EOS is generate's own stop.)"""

    def __init__(self, prompt_width: int, ended):
        self.prompt_width, self.ended = prompt_width, ended

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        return torch.tensor([self.ended(row.tolist()) for row in input_ids[:, self.prompt_width:]],
                            device=input_ids.device)
