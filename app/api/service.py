"""The one loaded model, its loading state, and the queue every forward pass waits in.

Model work runs in a worker thread, one call at a time: an async limiter of one token
queues requests in arrival order without holding threads, and a thread lock guards the
model against anything outside the request path (a model swap waits for the pass in
flight). Health and job status read plain attributes and never touch either, so they
answer during a forward pass. Fine-tune jobs train a copy of their own (`load_like`).
"""

from __future__ import annotations

import functools
import gc
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import anyio
import anyio.to_thread

from app.api.errors import ApiError
from outlier_core.models import LoadedModel, load_model

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ModelStatus:
    model: str | None  # the model that serves requests (none before the first load)
    loading: str | None  # the model being loaded, if any
    error: str | None  # why the last load failed

    @property
    def ready(self) -> bool:
        return self.model is not None and self.loading is None


def load_like(model: LoadedModel) -> LoadedModel:
    """A separate instance of `model` (same name, device and dtype), for work that trains it."""
    return load_model(model.name, device=model.device, dtype=str(model.dtype).removeprefix("torch."))


class ModelService:
    def __init__(self, model: LoadedModel | None = None):
        self._model = model
        self._loading: str | None = None
        self._error: str | None = None
        self._state = threading.Lock()  # guards the three fields above; held for microseconds
        self.lock = threading.Lock()  # held for the whole of any model work
        self._queue = anyio.CapacityLimiter(1)

    def status(self) -> ModelStatus:
        with self._state:
            return ModelStatus(self._model.name if self._model else None, self._loading, self._error)

    def start_load(self, name: str, device: str | None = None, dtype: str | None = None) -> None:
        """Load a model in a background thread; the current one stops serving until it is done.

        On failure the previous model serves again and the error shows in `status()`. The
        previous model stays in memory during the load so that nothing is lost if it fails.
        """
        with self._state:
            if self._loading is not None:
                raise ApiError(409, f"name: {self._loading} is still loading; wait for it to finish", "name")
            self._loading = name
            self._error = None
        threading.Thread(target=self._load, args=(name, device, dtype), name=f"load-{name}", daemon=True).start()

    def _load(self, name: str, device: str | None, dtype: str | None) -> None:
        try:
            model = load_model(name, device=device, dtype=dtype)
        except Exception as err:  # any failure must reach health, not die with the thread
            log.exception("loading %s failed", name)
            with self._state:
                self._error = f"loading {name} failed: {err}"
                self._loading = None
            return
        with self.lock, self._state:  # waits for the forward pass in flight
            previous, self._model = self._model, model
            self._loading = None
        if previous is not None:
            del previous
            gc.collect()  # the bridge holds reference cycles: free the old weights now, not at some later collection
        log.info("serving %s", name)

    def current(self) -> LoadedModel:
        """The serving model, or a 503 that says why there is none."""
        with self._state:
            model, loading, error = self._model, self._loading, self._error
        if loading is not None:
            raise ApiError(503, f"the model {loading} is loading; retry shortly", headers={"Retry-After": "2"})
        if model is None:
            raise ApiError(503, error or "no model is loaded", headers={"Retry-After": "2"})
        return model

    async def run(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`work(model, *args, **kwargs)` in a worker thread, after every earlier call has finished."""
        self.current()  # fail fast, without queueing, while no model serves
        call = functools.partial(self._run_locked, work, args, kwargs)
        return await anyio.to_thread.run_sync(call, limiter=self._queue)

    def _run_locked(self, work: Callable[..., T], args: tuple, kwargs: dict) -> T:
        with self.lock:
            return work(self.current(), *args, **kwargs)
