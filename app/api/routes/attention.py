"""POST /api/attention: one layer's attention patterns (heads × query × key) for a prompt,
and the same patterns with interventions applied when the request gives some."""

from __future__ import annotations

import torch
from fastapi import APIRouter

from app.api.convert import decimals
from app.api.deps import ServiceDep, SettingsDep
from app.api.routes.intervene import checked_interventions
from app.api.schemas.common import MODEL_RESPONSES
from app.api.schemas.scan import AttentionIn, AttentionOut
from outlier_core.errors import InputError
from outlier_core.intervene.interventions import attention_patterns_under
from outlier_core.intervene.reference_means import reference_means
from outlier_core.load.hooks import check_layer
from outlier_core.load.models import LoadedModel
from outlier_core.load.tokens import encode
from outlier_core.observe.capture import attention_patterns

router = APIRouter(tags=["attention"])

# About 7 bytes a cell once rounded to 4 decimals: this keeps a payload under 1 MB.
MAX_CELLS = 100_000


def _shown(pattern: torch.Tensor, heads: list[int], mean_heads: bool) -> torch.Tensor:
    """(H, T, T) -> the chosen heads (H', T, T), or their mean (1, T, T)."""
    chosen = pattern[heads]
    return chosen.mean(dim=0, keepdim=True) if mean_heads else chosen


def _attention(model: LoadedModel, body: AttentionIn, max_tokens: int) -> dict:
    check_layer(model, body.layer)
    n_tokens = encode(model, body.text, body.prepend_bos, max_tokens).ids.shape[1]
    heads = list(range(model.n_heads)) if body.heads is None else body.heads
    if not heads or any(not 0 <= h < model.n_heads for h in heads):
        raise InputError("heads", f"must list heads in 0..{model.n_heads - 1}")
    interventions = checked_interventions(model, body.interventions, n_tokens)
    n_patterns = (1 if body.mean_heads else len(heads)) * (2 if interventions else 1)  # before, and after
    if n_patterns * n_tokens * n_tokens > MAX_CELLS:
        raise InputError("heads", f"{n_patterns} patterns of {n_tokens}×{n_tokens} exceed {MAX_CELLS} values; ask for fewer heads, mean_heads or a shorter text")
    found = attention_patterns(model, body.text, body.layer, body.prepend_bos)
    pattern = _shown(found.pattern, heads, body.mean_heads)  # (H', T, T)
    answer = {
        "layer": found.layer,
        "tokens": list(found.tokens),
        "heads": [] if body.mean_heads else heads,
        "patterns": decimals(pattern),
        "sink_share": pattern[:, :, 0].mean(dim=-1).tolist(),  # (H',)
    }
    if interventions:
        # The same reference means as /api/intervene, so a mean-replace means the same thing on both.
        means = {iv.site: reference_means(model, iv.site, prepend_bos=body.prepend_bos) for iv in interventions if iv.mode == "mean"}
        after = attention_patterns_under(model, body.text, body.layer, interventions, means, body.prepend_bos)
        pattern_after = _shown(after.pattern, heads, body.mean_heads)  # (H', T, T)
        answer["patterns_after"] = decimals(pattern_after)
        answer["sink_share_after"] = pattern_after[:, :, 0].mean(dim=-1).tolist()  # (H',)
    return answer


@router.post("/attention", response_model=AttentionOut, responses=MODEL_RESPONSES)
async def attention(body: AttentionIn, service: ServiceDep, settings: SettingsDep) -> dict:
    return await service.run(_attention, body, settings.max_tokens)
