"""POST /api/attention: one layer's attention patterns (heads × query × key) for a prompt,
and the same patterns with interventions applied when the request gives some; a prompt too
long for one payload comes back pooled into blocks of positions."""

from __future__ import annotations

import math

import torch
from fastapi import APIRouter

from app.api.convert import decimals
from app.api.deps import ServiceDep, SettingsDep
from app.api.schemas.common import MODEL_RESPONSES
from app.api.schemas.intervene import as_core
from app.api.schemas.scan import AttentionIn, AttentionOut
from outlier_core.errors import InputError
from outlier_core.intervene.interventions import (
    Intervention,
    attention_patterns_under_encoded,
)
from outlier_core.intervene.reference_means import reference_means
from outlier_core.load.models import LoadedModel
from outlier_core.load.tokens import Encoded, encode
from outlier_core.observe.capture import AttentionPatterns, attention_patterns_encoded

router = APIRouter(tags=["attention"])

# About 7 bytes a cell once rounded to 4 decimals: this keeps a payload under 1 MB. A prompt
# whose patterns would not fit is pooled into blocks of positions instead (`pool_pattern`).
MAX_CELLS = 100_000


def _shown(found: AttentionPatterns, heads: list[int], mean_heads: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The chosen heads' patterns (H', B, B) and sink shares (H',), or their means (1, B, B), (1,)."""
    pattern, sink = found.pattern[heads], found.sink_share[heads]
    if mean_heads:
        return pattern.mean(dim=0, keepdim=True), sink.mean(dim=0, keepdim=True)
    return pattern, sink


def _after(model: LoadedModel, prompt: Encoded, body: AttentionIn, interventions: list[Intervention], heads: list[int], blocks: int) -> dict:
    """The answer's `*_after` fields: the same patterns with the interventions applied."""
    # The same reference means as /api/intervene, so a mean-replace means the same thing on both.
    means = {iv.site: reference_means(model, iv.site, prepend_bos=body.prepend_bos) for iv in interventions if iv.mode == "mean"}
    pattern, sink = _shown(attention_patterns_under_encoded(model, prompt, body.layer, interventions, means, blocks), heads, body.mean_heads)
    return {"patterns_after": decimals(pattern), "sink_share_after": sink.tolist()}


def _attention(model: LoadedModel, body: AttentionIn, max_tokens: int) -> dict:
    prompt = encode(model, body.text, body.prepend_bos, max_tokens)
    heads = list(range(model.n_heads)) if body.heads is None else body.heads
    if not heads or any(not 0 <= h < model.n_heads for h in heads):
        raise InputError("heads", f"must list heads in 0..{model.n_heads - 1}")
    interventions = as_core(body.interventions, "interventions")
    n_patterns = (1 if body.mean_heads else len(heads)) * (2 if interventions else 1)  # before, and after
    blocks = max(2, math.isqrt(MAX_CELLS // n_patterns))  # positions per axis that fit: more are pooled
    after = _after(model, prompt, body, interventions, heads, blocks) if interventions else {}  # first: it checks the interventions
    found = attention_patterns_encoded(model, prompt, body.layer, max_blocks=blocks)
    pattern, sink = _shown(found, heads, body.mean_heads)
    return {
        "layer": found.layer,
        "tokens": list(found.tokens),
        "heads": [] if body.mean_heads else heads,
        "positions": list(found.starts),
        "patterns": decimals(pattern),
        "sink_share": sink.tolist(),
        **after,
    }


@router.post("/attention", response_model=AttentionOut, responses=MODEL_RESPONSES)
async def attention(body: AttentionIn, service: ServiceDep, settings: SettingsDep) -> dict:
    return await service.run(_attention, body, settings.max_tokens)
