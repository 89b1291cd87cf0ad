"""lm-eval tasks as clbench probe suites, scored by lm-eval's own evaluator against the model in memory.

A stream declares one with ``kind: lm_eval`` (see ``clbench.data.streams``)::

    - {name: gen_mc, kind: lm_eval, task: clbench_general_mc, include_path: lm_eval, metric: acc}

Why lm-eval's evaluator and not a re-implementation: its task YAML (prompts, few-shot sampling, filters,
metrics) is the reference the field reports against; clbench only supplies the model. After every task
the runner hands the evaluator :class:`ClbenchLM`, an ``lm_eval.api.model.TemplateLM`` over the very
(peft-wrapped) torch model being trained, so nothing is saved or reloaded between tasks.

Tasks come from ``TaskManager(include_path=<folder>, include_defaults=False)`` when the stream names a
folder (only those YAML files are indexed: fast, and nothing reaches a hub), or from lm-eval's built-in
tasks otherwise (their datasets must already be in the local Hugging Face cache). A relative
``data_files`` path in a task YAML is taken relative to that YAML file (lm-eval itself would take it
relative to the working directory), so a stream and its tasks work from any directory.

The suite's score is ``results[task]["<metric>,<filter>"]``; its per-item records are lm-eval's logged
samples (``log_samples``), stored like native probe items.
"""

from __future__ import annotations

import json

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import (
    Collator,
    handle_stop_sequences,
    normalize_gen_kwargs,
    postprocess_generated_text,
)
from lm_eval.models.utils_hf import stop_sequences_criteria
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from clbench.data.lm_eval_tasks import loaded_task
from clbench.data.task_code import sandbox_templates
from clbench.errors import ConfigError
from clbench.eval.suite_result import SuiteResult

FEWSHOT_SEED = 1234  # simple_evaluate's default fewshot_random_seed


# --------------------------------------------------------------------------------------------------------
# The model side: lm-eval's three requests answered by the in-memory torch model.


class ClbenchLM(TemplateLM):
    """lm-eval's model interface over a torch causal LM in memory (peft-wrapped or not).

    Tokenisation is lm-eval's (``TemplateLM._encode_pair``: context and continuation encoded together,
    then split); batching sorts requests by length with lm-eval's ``Collator``; generation stops with
    lm-eval's own stop-sequence criteria. Decoding is greedy unless a task asks for sampling.
    """

    def __init__(self, model, tokenizer, batch_size: int = 64, max_length: int | None = None):
        super().__init__()
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self._max_length = max_length or _context_window(model)

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return 256

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "clbench")).replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, left_truncate_len=None, **kw):
        if add_special_tokens is None:  # a chat-templated prompt may already start with BOS
            bos = self.tokenizer.bos_token
            add_special_tokens = not (bos and string.startswith(bos))
        ids = self.tokenizer.encode(string, add_special_tokens=add_special_tokens)
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def tok_decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt,
                                                  continue_final_message=not add_generation_prompt)

    def loglikelihood(self, requests, disable_tqdm: bool = True) -> list[tuple[float, bool]]:
        """lm-eval's tokenisation of each request, then :meth:`_loglikelihood_tokens` (no progress bar:
        clbench draws its own)."""
        return super().loglikelihood(requests, disable_tqdm=True)

    @torch.no_grad()
    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """Summed log-prob of each continuation and whether greedy decoding would produce it."""
        seqs = [(ctx + cont)[-(self.max_length + 1):][:-1] for ctx, cont in pairs]
        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
        out = []
        for i, (_, cont) in enumerate(pairs):
            n, k = len(seqs[i]), len(cont)
            if k == 0:
                out.append((0.0, True))
                continue
            # token j of the continuation is predicted at input position n - k + j
            logp = torch.log_softmax(logits[i, n - k : n].float(), dim=-1).cpu()
            target = torch.tensor(cont)
            out.append((float(logp.gather(-1, target[:, None]).sum()), bool((logp.argmax(-1) == target).all())))
        return out

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kw) -> list[tuple[float, bool]]:
        order = Collator(requests, sort_fn=lambda r: (-len(r[1] + r[2]), tuple(r[1] + r[2])))
        res = []
        for chunk in order.get_batched(n=self.batch_size):
            scored = self._score([(ctx, cont) for _, ctx, cont in chunk])
            for (key, _, _), answer in zip(chunk, scored):
                if key is not None:
                    self.cache_hook.add_partial("loglikelihood", key, answer)
            res.extend(scored)
        return order.get_original(res)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Log-prob of each whole text given only the prefix token, in disjoint windows of ``max_length``.

        The text is encoded without special tokens: the prefix (BOS, or EOS for a model without one) is
        the only conditioning. lm-eval's HFLM encodes it with the tokenizer's defaults, so for a tokenizer
        that adds BOS it also scores a second BOS after the prefix (lm-evaluation-harness issue #3333);
        for a tokenizer without BOS the two agree (``tests/test_lm_eval_probes.py``).
        """
        windows, owner = [], []
        for i, (text,) in enumerate(req.args for req in requests):
            tokens = self.tok_encode(text, add_special_tokens=False)
            for ctx, cont in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=tokens, prefix_token=self.prefix_token_id, max_seq_len=self.max_length,
                    context_len=1)):
                windows.append((None, ctx, cont))
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, (ll, _) in zip(owner, self._loglikelihood_tokens(windows)):
            totals[i] += ll
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Continuations cut before the first of the task's ``until`` strings (EOS always stops too)."""
        order = Collator([r.args for r in requests], sort_fn=lambda a: (-len(self.tok_encode(a[0])), a[0]),
                         group_by="gen_kwargs", group_fn=lambda a: a[1])
        eos = self.tok_decode([self.eot_token_id], skip_special_tokens=False)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eot_token_id
        res = []
        for chunk in order.get_batched(n=self.batch_size):
            contexts, all_kwargs = zip(*chunk)
            kwargs = normalize_gen_kwargs(all_kwargs[0], self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_new = kwargs.pop("max_gen_toks")
            sampling = {k: v for k, v in kwargs.items() if k in ("temperature", "top_p", "top_k")}
            sample = bool(kwargs.get("do_sample"))
            enc = [self.tok_encode(c, left_truncate_len=self.max_length - max_new) for c in contexts]
            width = max(len(e) for e in enc)
            ids = torch.full((len(enc), width), pad, dtype=torch.long)
            mask = torch.zeros((len(enc), width), dtype=torch.long)
            for i, e in enumerate(enc):  # left padding: every prompt ends where generation starts
                ids[i, width - len(e):] = torch.tensor(e)
                mask[i, width - len(e):] = 1
            out = self.model.generate(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device), max_new_tokens=max_new,
                do_sample=sample, **(sampling if sample else {}),
                stopping_criteria=stop_sequences_criteria(self.tokenizer, until, width, len(enc)),
                pad_token_id=pad, eos_token_id=self.eot_token_id)
            for (context, gen_kwargs), row in zip(chunk, out[:, width:].tolist()):
                text = postprocess_generated_text(self.tok_decode(row), until, None)
                self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
                res.append(text)
        return order.get_original(res)


def _context_window(model) -> int:
    cfg = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def _jsonable(obj):
    from lm_eval.utils import handle_non_serializable

    return json.loads(json.dumps(obj, default=handle_non_serializable))


def score_lm_eval(suite, view):
    """Run the suite's lm-eval task on the model behind ``view`` (a ``clbench.eval.torch_lm.TorchLM``).

    ``lm_eval.evaluator.evaluate`` is what ``simple_evaluate`` runs after its set-up; called directly
    because the set-up's extras cost more than a small suite's scoring (``simple_evaluate`` lists the
    installed packages in a subprocess on every call, ~0.5 s) and reseed the global RNGs mid-run. The
    set-up a loaded task needs — its few-shot count and few-shot seed — is done here as
    ``simple_evaluate`` does it.
    """
    from lm_eval.evaluator import evaluate

    cfg = suite.config
    sandbox_templates()
    model = getattr(view, "model", None)
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"probes.{suite.name}", "lm_eval probe suites need the torch backend "
                          f"(got a {type(view).__name__} model view)")
    loaded = loaded_task(cfg["include_path"], cfg["task"], cfg["digest"])
    for task in loaded["tasks"].values():
        if cfg["num_fewshot"] is not None and task.get_config("num_fewshot") != 0:
            task.set_config(key="num_fewshot", value=cfg["num_fewshot"])
        elif task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=FEWSHOT_SEED)
    out = evaluate(lm=ClbenchLM(model, view.tokenizer, getattr(view, "batch_size", 64)), task_dict=loaded,
                   limit=cfg["limit"], bootstrap_iters=0, log_samples=True,
                   apply_chat_template=bool(cfg.get("apply_chat_template", False)))
    key = f"{cfg['metric']},{cfg['filter']}"
    row = out["results"].get(cfg["task"], {})
    if key not in row:
        raise ConfigError(f"probes.{suite.name}", f"lm-eval reported no {key!r} for {cfg['task']!r}",
                          [k for k in row if "," in k and "_stderr" not in k])
    items = [_jsonable({"task": name, **sample}) for name, samples in out["samples"].items() for sample in samples]
    n = sum(1 for it in items if it.get("filter", cfg["filter"]) == cfg["filter"])
    return SuiteResult(float(row[key]), n, items)
