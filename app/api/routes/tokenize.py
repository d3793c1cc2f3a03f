"""POST /api/tokenize: a prompt's positions, so a client can tell which coordinates fit it."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter

from app.api.deps import ServiceDep, SettingsDep
from app.api.schemas.common import MODEL_RESPONSES
from app.api.schemas.tokenize import TokenizeIn, TokensOut
from outlier_core.load.tokens import encode

router = APIRouter(tags=["activations"])


@router.post("/tokenize", response_model=TokensOut, responses=MODEL_RESPONSES)
async def tokenize(body: TokenizeIn, service: ServiceDep, settings: SettingsDep) -> TokensOut:
    """The tokenizer alone, off the model queue: it answers while a forward pass runs."""
    model = service.current()
    limit = min(settings.max_tokens, model.n_ctx)
    encoded = await anyio.to_thread.run_sync(encode, model, body.text, body.prepend_bos, limit)
    return TokensOut(tokens=list(encoded.tokens), max_tokens=limit)
