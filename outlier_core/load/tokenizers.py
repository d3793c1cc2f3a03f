"""A byte-level tokenizer built in code, so the tiny test model needs no files at all."""

from __future__ import annotations

from typing import Any

SPECIAL_TOKENS = ("<bos>", "<eos>", "<unk>", "<pad>")


def byte_tokenizer() -> Any:
    """256 byte tokens plus BOS/EOS/UNK/PAD: every string round-trips, one token per byte."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()  # the 256 printable stand-ins for bytes
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    vocab.update({char: len(SPECIAL_TOKENS) + i for i, char in enumerate(sorted(alphabet))})
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        name_or_path="byte-tokenizer",
    )
    # TransformerLens reloads a tokenizer by name unless it already adds BOS; ours has no
    # files to reload from. Outlier Lab never lets a tokenizer add BOS by itself anyway.
    tokenizer.init_kwargs["add_bos_token"] = True
    return tokenizer
