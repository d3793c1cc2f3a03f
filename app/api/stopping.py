"""A request's stop flag: set when its client disconnects, its time limit passes or its client cancels it.

The core polls it (`should_stop`) between windows and at every layer, from the worker
thread; a watcher task on the event loop asks Starlette whether the client is still there.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import Request

POLL_SECONDS = 0.1


class RequestStop:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.client_gone = False
        self.cancelled = False  # POST /api/queue/{id}/cancel

    def cancel(self) -> None:
        self.cancelled = True

    @property
    def timed_out(self) -> bool:
        return time.monotonic() > self.deadline

    def __call__(self) -> bool:
        return self.client_gone or self.cancelled or self.timed_out


@asynccontextmanager
async def watched(request: Request, seconds: float) -> AsyncIterator[RequestStop]:
    """A stop flag for the block, set by a watcher task when the client leaves."""
    stop = RequestStop(seconds)
    watcher = asyncio.create_task(_watch(request, stop))
    try:
        yield stop
    finally:
        watcher.cancel()


async def _watch(request: Request, stop: RequestStop) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(POLL_SECONDS)
    stop.client_gone = True
