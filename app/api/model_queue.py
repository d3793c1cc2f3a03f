"""Who holds the model, who waits for it and in what order, and how far the long requests are.

Every call of `ModelService.run` takes a turn: it waits in arrival order (the order the
service's limiter serves), then holds the model until its work returns. A long request —
an evaluation scored window by window — is a `Work` spanning many turns, with its progress
and a cancel flag. Each request says who it comes from (`X-Client-Id`, set by the UI per
browser tab) and what it is (its route); `CallerMiddleware` puts both in a context variable
that the turns read. Everything here is guarded by one lock held for microseconds, never by
the model lock, so /api/queue answers during any forward pass.
"""

from __future__ import annotations

import itertools
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, Iterator

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import ApiError
from outlier_core.ids import new_id

CLIENT_HEADER = "X-Client-Id"  # an id a client picks for itself: its place in the queue, its own work to cancel
MAX_CLIENT_ID = 64

# The route's path -> what a user would call the request; the longest matching prefix wins.
WHAT = {
    "/api/scan": "a scan",
    "/api/tokenize": "tokenizing",
    "/api/activations": "an activation view",
    "/api/attention": "an attention view",
    "/api/intervene": "an intervention",
    "/api/weights": "weight statistics",
    "/api/masks": "a mask change",
    "/api/masks/suggest": "a mask suggestion",
    "/api/masks/import": "a mask import",
    "/api/finetune": "a fine-tune check",
    "/api/sweeps": "a sweep check",
    "/api/model/deltas": "a change of deltas",
}


@dataclass(frozen=True)
class Caller:
    client: str | None  # the request's X-Client-Id, if it sent one
    what: str


CALLER: ContextVar[Caller] = ContextVar("caller", default=Caller(None, "a request"))
_WORK: ContextVar[str | None] = ContextVar("work", default=None)


def what_for(path: str) -> str:
    matches = [prefix for prefix in WHAT if path == prefix or path.startswith(prefix + "/")]
    return WHAT[max(matches, key=len)] if matches else path


class CallerMiddleware:
    """Pure ASGI: the request's caller in `CALLER` for everything the request runs."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = dict(scope["headers"]).get(CLIENT_HEADER.lower().encode())
        client_id = client.decode("latin-1")[:MAX_CLIENT_ID] if client else None
        token = CALLER.set(Caller(client_id or None, what_for(scope["path"])))
        try:
            await self.app(scope, receive, send)
        finally:
            CALLER.reset(token)


@dataclass
class Work:
    """A request that holds the model for many turns; changed only under the queue's lock."""

    id: str
    caller: Caller
    started: float  # monotonic
    unit: str  # what `done` and `total` count, e.g. "window"
    cancel: Callable[[], None] | None  # stops it between two turns; None: it cannot be stopped
    done: int = 0
    total: int | None = None
    cancelled: bool = False


@dataclass
class _Turn:
    caller: Caller
    work: str | None
    since: float  # monotonic: when it began to wait, then when it began to hold
    holding: bool = False


@dataclass(frozen=True)
class TurnView:
    what: str
    seconds: float  # waiting so far, or holding so far
    mine: bool
    work: str | None  # the long request this is a turn of


@dataclass(frozen=True)
class WorkView:
    id: str
    what: str
    seconds: float
    unit: str
    done: int
    total: int | None
    mine: bool
    cancellable: bool
    cancelled: bool


@dataclass(frozen=True)
class QueueView:
    holder: TurnView | None
    waiting: tuple[TurnView, ...]  # in the order they will get the model
    works: tuple[WorkView, ...]  # oldest first
    position: int | None  # 1 = next: where the asking client's first waiting turn stands


class ModelQueue:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards the fields below; held for microseconds
        self._turns: dict[int, _Turn] = {}  # arrival order
        self._works: dict[str, Work] = {}
        self._ids = itertools.count()

    # ---- turns: one call of ModelService.run ----

    def enter(self) -> int:
        """A turn of the current request, waiting; the caller and any work come from the context."""
        with self._lock:
            key = next(self._ids)
            self._turns[key] = _Turn(CALLER.get(), _WORK.get(), time.monotonic())
            return key

    def hold(self, key: int) -> None:
        with self._lock:
            turn = self._turns.get(key)
            if turn is not None:
                turn.holding, turn.since = True, time.monotonic()

    def leave(self, key: int) -> None:
        with self._lock:
            self._turns.pop(key, None)

    # ---- works: requests of many turns ----

    @contextmanager
    def working(self, what: str, unit: str, cancel: Callable[[], None] | None) -> Iterator[Work]:
        """Turns taken inside the block belong to one work of the current caller."""
        caller = CALLER.get()
        work = Work(new_id(), Caller(caller.client, what), time.monotonic(), unit, cancel)
        with self._lock:
            self._works[work.id] = work
        token = _WORK.set(work.id)
        try:
            yield work
        finally:
            _WORK.reset(token)
            with self._lock:
                self._works.pop(work.id, None)

    def progress(self, work: Work, done: int, total: int | None) -> None:
        with self._lock:
            work.done, work.total = done, total

    def cancel(self, work_id: str, client: str | None) -> None:
        """Ask the work to stop at its next turn; only its own client may."""
        with self._lock:
            work = self._works.get(work_id)
            if work is None:
                raise ApiError(404, f"work_id: no request {work_id!r} is running (it may have finished)", "work_id")
            if client is None or work.caller.client != client:
                raise ApiError(403, f"work_id: only the client that started it may cancel it (send its {CLIENT_HEADER})", "work_id")
            if work.cancel is None:
                raise ApiError(409, f"work_id: {work.caller.what} cannot be stopped part way", "work_id")
            work.cancelled = True
            stop = work.cancel
        stop()

    # ---- what /api/queue shows ----

    def view(self, client: str | None) -> QueueView:
        now = time.monotonic()
        with self._lock:
            turns = list(self._turns.values())
            works = list(self._works.values())
            labels = {w.id: w.caller.what for w in works}

            def mine(caller: Caller) -> bool:
                return client is not None and caller.client == client

            def turn_view(turn: _Turn) -> TurnView:
                return TurnView(labels.get(turn.work, turn.caller.what), round(now - turn.since, 3), mine(turn.caller), turn.work)

            holder = next((turn_view(t) for t in turns if t.holding), None)
            waiting = tuple(turn_view(t) for t in turns if not t.holding)
            work_views = tuple(
                WorkView(w.id, w.caller.what, round(now - w.started, 3), w.unit, w.done, w.total, mine(w.caller), w.cancel is not None, w.cancelled)
                for w in works
            )
        position = next((i + 1 for i, t in enumerate(waiting) if t.mine), None)
        return QueueView(holder, waiting, work_views, position)
