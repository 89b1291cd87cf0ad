"""Native probe scoring against lm-eval's ``HFLM``, side by side on the same model, items and batch size.

``clbench perf --model <folder or name>`` prints, for multiple choice (log-likelihood of each choice)
and greedy generation, the time of clbench's ``TorchLM`` and of lm-eval's ``HFLM`` given the very same
in-memory model and tokenizer, their ratio, and whether the answers are identical: the same predicted
choice and log-likelihoods within float32 rounding (``rel 1e-5, abs 1e-4``, as the equality tests hold
them), the same generated text. lm-eval is
asked through its own request objects (``Instance``), exactly what its evaluator would send for these
items.

Generation is compared twice: cut at the first newline (``until: ["\\n"]`` for both), and, given the
probe suite's ``until`` strings, cut at the newline and at those (``generation_until``): both sides get
the same stop strings, HFLM in its ``gen_kwargs`` (it stops a batch once every row has produced one),
clbench in ``generate(..., until=...)``, and the answers compared are both cut there.

With ``autocast`` (a dtype: the runs' ``model.autocast``), both sides run in ``torch.autocast`` with it
(clbench in its view, which also holds the model's Linear weights in bf16 while it is open — each timed call
opens it, the cast included —, HFLM through its own ``mixed_precision_dtype``), so the comparison is again one model computed one way; bf16 products are not
bit-reproducible across two batching schemes, so there the check is the same choice and the same answers,
and the log-likelihood gap is reported, not held to float32's 1e-5.

Times are CPU seconds of this process (``time.process_time``) as well as wall seconds: on a shared
machine the wall time of one side can absorb another process's load, the CPU time cannot. Each side runs
once untimed, then ``reps`` timed times (median reported).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch

from clbench.eval.probes import cut_at
from clbench.eval.torch_lm import TorchLM
from clbench.modeling.loading import autocast_context


def _timed(fn: Callable[[], object], reps: int) -> tuple[object, float, float]:
    cpu, wall, out = [], [], None
    for _ in range(reps):
        c0, w0 = time.process_time(), time.perf_counter()
        out = fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return out, statistics.median(cpu), statistics.median(wall)


def hflm(model, tokenizer, batch_size: int, autocast: torch.dtype | None = None):
    """lm-eval's own Hugging Face model class around the model in memory; with ``autocast``, its own
    mixed precision (``mixed_precision_dtype``: HFLM wraps every model call in ``torch.autocast(...,
    enabled=mixed_precision_dtype is not None)``, which switches an outer autocast *off* — so it must be
    told, or it runs in float32)."""
    import logging

    from lm_eval.models.huggingface import HFLM

    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # its notice about an in-memory model
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(model.device),
                mixed_precision_dtype=autocast)


def compare(model, tokenizer, mc_items: Sequence[dict], qa_items: Sequence[dict], batch_size: int,
            max_new_tokens: int, reps: int = 1, until: Sequence[str] = (), autocast: torch.dtype | None = None) -> dict:
    """``{"mc": {...}, "generation": {...}}`` (and ``"generation_until"`` when ``until`` is given):
    seconds of each side, the ratio, and the agreement."""
    from lm_eval.api.instance import Instance

    model.eval()
    native = TorchLM(model, tokenizer, batch_size=batch_size, autocast=autocast)
    reference = hflm(model, tokenizer, batch_size, autocast)

    def in_view(fn):  # each native call opens its view, as an evaluation row does (its weight cast included)
        def call():
            with native:
                return fn()
        return call
    pairs = [(it["prompt"], " " + c) for it in mc_items for c in it["choices"]]
    prompts = [it["prompt"] for it in qa_items]
    ll_requests = [Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)]

    def generation(stops: Sequence[str]):
        """Both sides' greedy answers cut at the newline and at ``stops``."""
        kwargs = {"until": ["\n", *stops], "max_gen_toks": max_new_tokens, "do_sample": False}
        requests = [Instance("generate_until", {}, (p, dict(kwargs)), i) for i, p in enumerate(prompts)]
        return (in_view(lambda: [cut_at(t, stops) for t in native.generate(prompts, max_new_tokens, until=stops)]),
                lambda: [cut_at(t, ["\n", *stops]) for t in reference.generate_until(requests, disable_tqdm=True)])

    sides = [("mc", in_view(lambda: native.loglikelihood(pairs)),
              lambda: [ll for ll, _ in reference.loglikelihood(ll_requests, disable_tqdm=True)]),
             ("generation", *generation(()))]
    if until:
        sides.append(("generation_until", *generation(tuple(until))))
    out = {}
    with torch.no_grad(), autocast_context(model.device, autocast):
        for kind, ours, theirs in sides:
            ours(), theirs()  # untimed first calls: one-off set-up costs (allocations, caches) hit neither side
            a, a_cpu, a_wall = _timed(ours, reps)
            b, b_cpu, b_wall = _timed(theirs, reps)
            out[kind] = {"native_cpu_s": a_cpu, "native_wall_s": a_wall, "lm_eval_cpu_s": b_cpu,
                         "lm_eval_wall_s": b_wall, "ratio_cpu": b_cpu / a_cpu, "ratio_wall": b_wall / a_wall,
                         "requests": len(a), **agreement(kind, a, b, mc_items, 1e-5 if autocast is None else None)}
    return out


def agreement(kind: str, ours: list, theirs: list, mc_items: Sequence[dict], tolerance: float | None = 1e-5) -> dict:
    """Whether both sides give the same answers (``identical``: same choices, and log-likelihoods within
    ``tolerance`` relative unless it is ``None``) and the largest log-likelihood gap."""
    if kind.startswith("generation"):
        return {"identical": ours == theirs, "differing": sum(a != b for a, b in zip(ours, theirs))}
    gap = max((abs(a - b) / max(1.0, abs(b)) for a, b in zip(ours, theirs)), default=0.0)
    # within float32 rounding: pytest.approx(theirs, rel=tolerance, abs=10·tolerance), as the equality tests
    # hold it (a summed log-likelihood of a few nats from differently shaped products differs by ~1e-5)
    close = tolerance is None or all(abs(a - b) <= max(tolerance * abs(b), 10 * tolerance) for a, b in zip(ours, theirs))
    picks, k = [], 0
    for it in mc_items:
        n = len(it["choices"])
        pick = [max(range(n), key=lambda i, s=s: (s[k + i], -i)) for s in (ours, theirs)]
        picks.append(pick[0] == pick[1])
        k += n
    return {"identical": all(picks) and close, "max_relative_gap": gap, "same_prediction": sum(picks),
            "items": len(picks)}


def print_comparison(result: dict, batch_size: int) -> None:
    for kind, r in result.items():
        verdict = "identical" if r["identical"] else "DIFFERENT"
        extra = (f", max relative log-likelihood gap {r['max_relative_gap']:.1e}, the same choice on "
                 f"{r['same_prediction']} of {r['items']} items" if kind == "mc"
                 else f", {r['differing']} answers differ")
        print(f"  {kind:<16} {r['requests']:>4} requests, batch {batch_size}: native {r['native_cpu_s']:6.2f} s, "
              f"lm-eval HFLM {r['lm_eval_cpu_s']:6.2f} s CPU -> {r['ratio_cpu']:.2f}x "
              f"(wall {r['native_wall_s']:.2f} / {r['lm_eval_wall_s']:.2f} s -> {r['ratio_wall']:.2f}x); "
              f"{verdict}{extra}")
