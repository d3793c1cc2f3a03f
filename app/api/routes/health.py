"""GET /api/health: async and lock-free, so it answers during a forward pass or a load."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ServiceDep
from app.api.routes.model import progress_out
from app.api.schemas.model import HealthOut

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthOut)
async def health(service: ServiceDep) -> HealthOut:
    status = service.status()
    return HealthOut(ready=status.ready, model=status.model, loading=status.loading, error=status.error, deltas=status.deltas,
                     progress=progress_out(status.progress))
