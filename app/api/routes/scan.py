"""POST /api/scan: every layer of one prompt — top entries, massive activations, sinks."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ServiceDep, SettingsDep
from app.api.schemas.common import MODEL_RESPONSES
from app.api.schemas.scan import ScanIn
from outlier_core.observe.capture import Scan
from outlier_core.observe.capture import scan as scan_prompt

router = APIRouter(tags=["activations"])


@router.post("/scan", response_model=Scan, responses=MODEL_RESPONSES)
async def scan(body: ScanIn, service: ServiceDep, settings: SettingsDep) -> Scan:
    return await service.run(
        scan_prompt, body.text, body.prepend_bos, body.site, body.top_k, body.rule(), settings.max_tokens
    )
