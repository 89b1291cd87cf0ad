"""Chat-formatted prompts for instruct checkpoints, rendered by the checkpoint's own chat template.

Base models (and the embedded tiny model) read prompts as plain text: ``model.use_chat_template`` is off
by default. An instruct checkpoint was tuned on its template, so with the option on every prompt is one
user turn followed by the opening of the assistant's turn::

    <|im_start|>user\\nQuestion: What is the capital of Naibraithia?\\nAnswer:<|im_end|>\\n<|im_start|>assistant\\n

What is wrapped: the prompt of ``{"prompt", "completion"}`` training records and of exact-match and
multiple-choice probes. What is not: ``{"text"}`` training documents and perplexity probes (documents,
not turns), and completions and choices (they are what the assistant says, scored as before).
lm-eval suites get lm-eval's own ``apply_chat_template`` switch, which uses the same template.
"""

from __future__ import annotations

import dataclasses

from clbench.data.probe_kinds import CHAT_WRAPPED_KINDS
from clbench.data.streams import ProbeSuite, Stream, Task
from clbench.errors import ConfigError


def _adds_bos(tokenizer) -> bool:
    ids = tokenizer("x")["input_ids"]
    return tokenizer.bos_token_id is not None and bool(ids) and ids[0] == tokenizer.bos_token_id


def chat_prompt(tokenizer, prompt: str) -> str:
    """``prompt`` as a single user turn plus the assistant's opening, as text ready for the tokenizer.

    A template that writes the BOS token itself would get a second one from a tokenizer that adds BOS
    on encoding; the rendered BOS is dropped then, so the sequence starts with exactly one.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("model.use_chat_template", f"the tokenizer of {tokenizer.name_or_path or 'this model'} "
                          "has no chat template; set use_chat_template: false for a base model")
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
    bos = tokenizer.bos_token
    if bos and text.startswith(bos) and _adds_bos(tokenizer):
        text = text[len(bos):]
    return text


def _wrap_train(tokenizer, rec: dict) -> dict:
    return {**rec, "prompt": chat_prompt(tokenizer, rec["prompt"])} if "prompt" in rec else rec


def _wrap_suite(tokenizer, suite: ProbeSuite) -> ProbeSuite:
    if suite.kind == "lm_eval":
        return dataclasses.replace(suite, config={**suite.config, "apply_chat_template": True})
    if suite.kind not in CHAT_WRAPPED_KINDS:
        return suite
    items = tuple({**it, "prompt": chat_prompt(tokenizer, it["prompt"])} for it in suite.items)
    return dataclasses.replace(suite, items=items)


def chat_stream(stream: Stream, tokenizer) -> Stream:
    """The stream with every prompt wrapped in the tokenizer's chat template (see the module docstring)."""
    tasks = tuple(Task(t.name, tuple(_wrap_train(tokenizer, r) for r in t.train),
                       tuple(_wrap_suite(tokenizer, s) for s in t.probes), t.pretrained) for t in stream.tasks)
    return dataclasses.replace(stream, tasks=tasks)
