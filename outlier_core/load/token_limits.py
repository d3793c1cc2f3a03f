"""Token counts that stop early: a long text is cut or refused after tokenizing a prefix.

Tokenizing megabytes takes seconds; a request that may keep only its first tokens, or that
is refused past a limit, needs a prefix a few times the limit long. The prefix doubles
until it holds `SLACK` tokens more than asked for, or is the whole text: a tokenizer
splits text into words first, so a cut changes only the last few tokens of a prefix, and
the earlier ones are those of the whole text. The tokenizer adds nothing, as in
`tokens.encode`.
"""

from __future__ import annotations

from outlier_core.load.models import LoadedModel

SLACK = 8  # tokens at the end of a prefix that a cut may have split differently
CHARS_PER_TOKEN = 4  # the first prefix's length per token asked for; a guess, doubled when short


def first_tokens(model: LoadedModel, text: str, n: int) -> list[int]:
    """The first `n` token ids of `text` (all of them when it is shorter)."""
    ids, _ = _prefix_ids(model, text, n)
    return ids[:n]


def longer_than(model: LoadedModel, text: str, n: int) -> bool:
    """Whether `text` is more than `n` tokens long, answered from a prefix when it is."""
    ids, whole = _prefix_ids(model, text, n)
    return len(ids) > (n if whole else n + SLACK)


def _prefix_ids(model: LoadedModel, text: str, n: int) -> tuple[list[int], bool]:
    """Ids of the shortest doubling prefix holding `n + SLACK` tokens, or of the whole text; and whether it is whole."""
    chars = CHARS_PER_TOKEN * (n + SLACK)
    while True:
        whole = chars >= len(text)
        ids = model.tokenizer(text if whole else text[:chars], add_special_tokens=False).input_ids
        if whole or len(ids) > n + SLACK:
            return ids, whole
        chars *= 2
