"""Token counts that stop early: a long text is cut or refused after tokenizing a part of it.

Tokenizing a megabyte at once takes seconds and a few hundred MB; a request that keeps only
its first tokens, or is refused past a limit, needs no more than a few times the limit's
worth of characters. The text is tokenized in chunks cut just before a space, the place
where a tokenizer splits words anyway: for byte-level BPE (SmolLM2, GPT-2, Llama 3) the
chunks give the tokens of the whole text; a text without spaces, or a tokenizer that marks
word starts itself (SentencePiece), may differ by a token at a cut. The tokenizer adds
nothing, as in `tokens.encode`.
"""

from __future__ import annotations

from typing import Iterator

from outlier_core.load.models import LoadedModel

CHARS_PER_TOKEN = 4  # a chunk's length per token asked for; more chunks follow when it is short
MIN_CHUNK, MAX_CHUNK = 4_096, 65_536  # characters: few calls for short limits, bounded memory per call


def first_tokens(model: LoadedModel, text: str, n: int) -> list[int]:
    """The first `n` token ids of `text` (all of them when it is shorter)."""
    ids: list[int] = []
    for chunk in _chunks(text, n):
        ids.extend(model.tokenizer(chunk, add_special_tokens=False).input_ids)
        if len(ids) >= n:
            break
    return ids[:n]


def longer_than(model: LoadedModel, text: str, n: int) -> bool:
    """Whether `text` is more than `n` tokens long, answered as soon as the count passes `n`."""
    count = 0
    for chunk in _chunks(text, n):
        count += len(model.tokenizer(chunk, add_special_tokens=False).input_ids)
        if count > n:
            return True
    return False


def _chunks(text: str, n: int) -> Iterator[str]:
    size = min(max(CHARS_PER_TOKEN * n, MIN_CHUNK), MAX_CHUNK)
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            space = text.rfind(" ", start + 1, end)
            end = space if space > start else end  # the next chunk starts with the space, as its word's token does
        yield text[start:end]
        start = end
