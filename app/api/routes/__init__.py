"""`api_router`: every resource's router under /api; all but health need the API key when one is set."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.api.deps import require_api_key
from app.api.routes import (
    activations,
    attention,
    deltas,
    health,
    intervene,
    jobs,
    layer_weights,
    mask_edits,
    masks,
    model,
    notebook,
    queue,
    scan,
    sweeps,
    task_data,
    tokenize,
    vocab,
    weights,
)

api_router = APIRouter(prefix="/api")
api_router.include_router(health.router)
for module in (vocab, model, deltas, scan, tokenize, activations, attention, weights, layer_weights, intervene, masks, mask_edits, notebook, queue, jobs, sweeps, task_data):
    api_router.include_router(module.router, dependencies=[Depends(require_api_key)])
