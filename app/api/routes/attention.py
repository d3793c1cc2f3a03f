"""POST /api/attention: one layer's attention patterns (heads × query × key) for a prompt."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.convert import decimals
from app.api.deps import ServiceDep, SettingsDep
from app.api.schemas.common import MODEL_RESPONSES
from app.api.schemas.scan import AttentionIn, AttentionOut
from outlier_core.capture import attention_patterns, check_layer
from outlier_core.errors import InputError
from outlier_core.models import LoadedModel
from outlier_core.tokens import encode

router = APIRouter(tags=["attention"])

# About 7 bytes a cell once rounded to 4 decimals: this keeps a payload under 1 MB.
MAX_CELLS = 100_000


def _attention(model: LoadedModel, body: AttentionIn, max_tokens: int) -> dict:
    check_layer(model, body.layer)
    n_tokens = encode(model, body.text, body.prepend_bos, max_tokens).ids.shape[1]
    heads = list(range(model.n_heads)) if body.heads is None else body.heads
    if not heads or any(not 0 <= h < model.n_heads for h in heads):
        raise InputError("heads", f"must list heads in 0..{model.n_heads - 1}")
    n_patterns = 1 if body.mean_heads else len(heads)
    if n_patterns * n_tokens * n_tokens > MAX_CELLS:
        raise InputError("heads", f"{n_patterns} patterns of {n_tokens}×{n_tokens} exceed {MAX_CELLS} values; ask for fewer heads, mean_heads or a shorter text")
    found = attention_patterns(model, body.text, body.layer, body.prepend_bos)
    pattern = found.pattern[heads]  # (H', T, T)
    if body.mean_heads:
        pattern = pattern.mean(dim=0, keepdim=True)  # (1, T, T)
    return {
        "layer": found.layer,
        "tokens": list(found.tokens),
        "heads": [] if body.mean_heads else heads,
        "patterns": decimals(pattern),
        "sink_share": pattern[:, :, 0].mean(dim=-1).tolist(),  # (H',)
    }


@router.post("/attention", response_model=AttentionOut, responses=MODEL_RESPONSES)
async def attention(body: AttentionIn, service: ServiceDep, settings: SettingsDep) -> dict:
    return await service.run(_attention, body, settings.max_tokens)
