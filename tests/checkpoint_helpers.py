"""Small local Hugging Face checkpoints of two architectures, built the way a user's checkpoint is saved.

* ``llama``: Llama-shaped, tied embeddings, a tokenizer that adds BOS and has a pad token, and a chat
  template that writes BOS itself (like Llama 3's) — the double-BOS case of ``clbench.modeling.chat``;
* ``qwen2``: Qwen2-shaped, untied output head, a tokenizer like Qwen2's base models: no BOS, EOS and
  pad ``<|endoftext|>``, and a ChatML template with ``<|im_start|>``/``<|im_end|>`` special tokens.
* ``without_pad(src, target)``: a copy whose tokenizer has no pad token (loading falls back to EOS).

Both: hidden 48, 2 layers, random initialisation, BPE vocabulary trained on the micro stream's text
(``clbench.modeling.tokenizer.train_bpe_tokenizer``), saved with ``save_pretrained``.
"""

from __future__ import annotations

from pathlib import Path

import torch

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
LLAMA_CHAT = ("{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
              "{% if add_generation_prompt %}[assistant] {% endif %}")
HIDDEN, LAYERS = 48, 2


def _texts() -> list[str]:
    from clbench.data.streams import load_stream
    from clbench.modeling.tiny import tokenizer_corpus

    return tokenizer_corpus(load_stream("micro"))


def _qwen_tokenizer(texts):
    """A BPE tokenizer shaped like Qwen2's: no BOS added, ``<|endoftext|>`` as EOS (transformers' Qwen2
    tokenizer class, which AutoTokenizer picks for this model type, makes it the pad token too)."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    from clbench.modeling.tokenizer import train_bpe_tokenizer

    raw = Tokenizer.from_str(train_bpe_tokenizer(texts, 300).backend_tokenizer.to_str())
    raw.post_processor = processors.ByteLevel(trim_offsets=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", padding_side="right")
    tok.add_special_tokens({"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
                            "additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    return tok


def make_checkpoint(target: Path, arch: str, seed: int = 0) -> Path:
    """Save a random-init ``arch`` ("llama" or "qwen2") checkpoint and its tokenizer into ``target``."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from clbench.modeling.tokenizer import train_bpe_tokenizer

    texts = _texts()
    common = {"hidden_size": HIDDEN, "intermediate_size": 2 * HIDDEN, "num_hidden_layers": LAYERS,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256}
    torch.manual_seed(seed)
    if arch == "llama":
        tok = train_bpe_tokenizer(texts, 300)
        tok.chat_template = LLAMA_CHAT
        cfg = LlamaConfig(vocab_size=len(tok), tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **common)
        model = LlamaForCausalLM(cfg)
    elif arch == "qwen2":
        tok = _qwen_tokenizer(texts)
        cfg = Qwen2Config(vocab_size=len(tok), tie_word_embeddings=False, eos_token_id=tok.eos_token_id,
                          bos_token_id=None, **common)
        model = Qwen2ForCausalLM(cfg)
    else:
        raise ValueError(arch)
    model.save_pretrained(target)
    tok.save_pretrained(target)
    return target


def without_pad(src: Path, target: Path) -> Path:
    """A copy of checkpoint ``src`` whose saved tokenizer has no pad token."""
    import shutil

    from transformers import AutoTokenizer

    shutil.copytree(src, target)
    tok = AutoTokenizer.from_pretrained(src, local_files_only=True)
    tok.pad_token = None
    tok.save_pretrained(target)
    return target
