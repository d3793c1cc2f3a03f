"""An evaluation text as rows of token ids that each fit the model's context."""

from __future__ import annotations

import logging

import torch

from outlier_core.errors import InputError
from outlier_core.intervene.corpus import Corpus
from outlier_core.load.models import LoadedModel
from outlier_core.load.token_limits import longer_than

log = logging.getLogger(__name__)


def eval_windows(model: LoadedModel, corpus: Corpus, prepend_bos: bool, window: int | None = None, max_tokens: int | None = None) -> list[torch.Tensor]:
    """The evaluation text as (1, T) id rows: one row when it fits `window` (default: the context).

    Passages are tokenized one by one (as `tokens.encode` does, BOS left to the rows) and
    rejoined by a blank line, so a text longer than the context still goes through one
    tokenization path. Past `max_tokens` tokens the text is refused, before most of it is
    tokenized.
    """
    window = min(window or model.n_ctx, model.n_ctx)
    too_long = InputError("eval_text", f"is more than {max_tokens} tokens long; this server scores at most {max_tokens}")
    if max_tokens is not None and longer_than(model, corpus.text, max_tokens):  # from a prefix: megabytes are refused at once
        raise too_long
    stream: list[int] = []
    for i, passage in enumerate(corpus.passages):
        stream.extend(model.tokenizer(passage if i == 0 else "\n\n" + passage, add_special_tokens=False).input_ids)
        if max_tokens is not None and len(stream) > max_tokens:
            raise too_long
    body = window - 1 if prepend_bos else window
    if len(stream) > body:
        dropped = len(stream) % body
        if dropped:
            log.info("scoring %s in %d windows of %d tokens; the last %d tokens are left out",
                     corpus.name, len(stream) // body, window, dropped)
        stream = stream[: len(stream) - dropped]
    rows = [stream[i:i + body] for i in range(0, len(stream), body)]
    if prepend_bos:
        rows = [[model.bos_token_id, *row] for row in rows]
    if not rows or len(rows[0]) < 2:
        raise InputError("eval_text", "needs at least two tokens to score")
    return [torch.tensor([row], device=model.device) for row in rows]
