"""GET /api/queue: who holds the model, who waits and in what order, how far the long requests
are; POST /api/queue/{id}/cancel stops a client's own long request between two windows.

Both are async and read `ModelQueue` only, never the model lock: they answer during any
forward pass. "Mine" is relative to the request's X-Client-Id.
"""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ServiceDep
from app.api.model_queue import CALLER, QueueView
from app.api.schemas.common import ERROR_RESPONSES, error

router = APIRouter(prefix="/queue", tags=["queue"])


@router.get("", response_model=QueueView, responses=ERROR_RESPONSES)
async def queue(service: ServiceDep) -> QueueView:
    """`holder`: the call running on the model now; `waiting`: the calls in line, next first;
    `works`: the requests that take many calls (an evaluation, window by window) with
    `done` of `total`; `position`: where this client's first waiting call stands (1 = next)."""
    return service.queue.view(CALLER.get().client)


@router.post(
    "/{work_id}/cancel", response_model=QueueView,
    responses=ERROR_RESPONSES | error(403, "another client started it") | error(404, "no such request is running") | error(409, "it cannot be stopped part way"),
)
async def cancel(work_id: str, service: ServiceDep) -> QueueView:
    """Stop this client's long request at its next window (or layer); the request itself then
    answers 409. Returns the queue as it stands."""
    client = CALLER.get().client
    service.queue.cancel(work_id, client)
    return service.queue.view(client)
