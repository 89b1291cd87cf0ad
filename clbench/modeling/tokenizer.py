"""A byte-level BPE tokenizer trained locally with the ``tokenizers`` library (no hub download).

Byte-level BPE can encode any text, so the embedded model also accepts user streams; training it on the
stream's own text keeps sequences short (fast on CPU) without giving the model any fact: a tokenizer
knows spellings, not associations.
"""

from __future__ import annotations

from collections.abc import Iterable

SPECIAL = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int):
    """A ``PreTrainedTokenizerFast`` with BOS/EOS/PAD, trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id(SPECIAL["bos_token"])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SPECIAL['bos_token']} $A", special_tokens=[(SPECIAL["bos_token"], bos)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=512, padding_side="right", **SPECIAL)
