"""The one loaded model, its loading state, and the queue every forward pass waits in.

Model work runs in a worker thread, one call at a time: an async limiter of one token
queues requests in arrival order without holding threads, and a thread lock guards the
model against anything outside the request path (a model swap waits for the pass in
flight). Health and job status read plain attributes and never touch either, so they
answer during a forward pass. Each call takes a turn in `queue` (`app.api.model_queue`):
who holds the model and who waits, for /api/queue to show without waiting itself.
Fine-tune jobs are run processes that load a copy of their own.

The served model may carry one fine-tune run's deltas (`outlier_core.tune.applied_run`):
attached, switched and merged under the same lock as any model work, dropped with the
model when another one loads. Its description is kept beside the status, so health
reports it without waiting for the lock.
"""

from __future__ import annotations

import functools
import gc
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import anyio
import anyio.to_thread

from app.api.errors import ApiError
from app.api.model_queue import ModelQueue
from outlier_core.load.models import (
    ANY_SOURCE,
    LoadedModel,
    ModelSources,
    load_model,
)
from outlier_core.load.placement import Placement
from outlier_core.load.progress import LoadProgress
from outlier_core.select.masks import model_shapes
from outlier_core.tune.applied_run import AppliedRun, AppliedState, attach_run

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ModelStatus:
    model: str | None  # the model that serves requests (none before the first load)
    loading: str | None  # the model being loaded, if any
    error: str | None  # why the last load failed
    deltas: AppliedState | None = None  # the applied run, if any
    progress: LoadProgress | None = None  # how far the load in progress has come

    @property
    def ready(self) -> bool:
        return self.model is not None and self.loading is None


class ModelService:
    def __init__(self, model: LoadedModel | None = None):
        self._model = model
        self._n_params = model_shapes(model)[1] if model else 0
        self._loading: str | None = None
        self._progress: LoadProgress | None = None  # the load's latest report
        self._error: str | None = None
        self._applied: AppliedRun | None = None  # changed only under `lock`
        self._deltas: AppliedState | None = None  # its state, readable without the model lock
        self._state = threading.Lock()  # guards the fields above; held for microseconds
        self.lock = threading.Lock()  # held for the whole of any model work
        self._queue = anyio.CapacityLimiter(1)  # serves its waiters in arrival order
        self.queue = ModelQueue()

    def status(self) -> ModelStatus:
        with self._state:
            return ModelStatus(self._model.name if self._model else None, self._loading, self._error, self._deltas, self._progress)

    def n_params(self) -> int:
        """The serving model's own parameter count (a run's deltas or LoRA factors not included)."""
        with self._state:
            return self._n_params

    def start_load(
        self, name: str, device: str | None = None, dtype: str | None = None, sources: ModelSources = ANY_SOURCE, placement: Placement | None = None
    ) -> None:
        """Load a model in a background thread; the current one stops serving until it is done.

        On failure the previous model serves again and the error shows in `status()`. The
        previous model stays in memory during the load so that nothing is lost if it fails.
        `sources`: what the name may stand for (`resolve_spec`), as the request was checked.
        `placement`: a device map to spread the model with, instead of `device`.
        """
        with self._state:
            if self._loading is not None:
                raise ApiError(409, f"name: {self._loading} is still loading; wait for it to finish", "name")
            self._loading = name
            self._progress = None
            self._error = None
        threading.Thread(target=self._load, args=(name, device, dtype, sources, placement), name=f"load-{name}", daemon=True).start()

    def _load(self, name: str, device: str | None, dtype: str | None, sources: ModelSources, placement: Placement | None) -> None:
        try:
            model = load_model(name, device=device, dtype=dtype, sources=sources, placement=placement, progress=self._report)
        except Exception as err:  # any failure must reach health, not die with the thread
            log.exception("loading %s failed", name)
            with self._state:
                self._error = f"loading {name} failed: {err}"
                self._loading = self._progress = None
            return
        n_params = model_shapes(model)[1]
        with self.lock, self._state:  # waits for the forward pass in flight
            previous, self._model = self._model, model
            self._n_params = n_params
            self._loading = self._progress = None
            self._applied = self._deltas = None  # the deltas went with the previous model
        if previous is not None:
            del previous
            gc.collect()  # the bridge holds reference cycles: free the old weights now, not at some later collection
        log.info("serving %s", name)

    def _report(self, progress: LoadProgress) -> None:
        with self._state:
            self._progress = progress

    def current(self) -> LoadedModel:
        """The serving model, or a 503 that says why there is none."""
        with self._state:
            model, loading, error, progress = self._model, self._loading, self._error, self._progress
        if loading is not None:
            where = f" ({progress.text})" if progress else ""
            raise ApiError(503, f"the model {loading} is loading{where}; retry shortly", headers={"Retry-After": "2"})
        if model is None:
            raise ApiError(503, error or "no model is loaded", headers={"Retry-After": "2"})
        return model

    async def run(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`work(model, *args, **kwargs)` in a worker thread, after every earlier call has finished."""
        self.current()  # fail fast, without queueing, while no model serves
        turn = self.queue.enter()
        try:
            return await anyio.to_thread.run_sync(functools.partial(self._run_locked, turn, work, args, kwargs), limiter=self._queue)
        finally:
            self.queue.leave(turn)

    def _run_locked(self, turn: int, work: Callable[..., T], args: tuple, kwargs: dict) -> T:
        self.queue.hold(turn)
        with self.lock:
            return work(self.current(), *args, **kwargs)

    async def run_on_plain_weights(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`run`, for work that reads parameters by name: refused while sparse or LoRA deltas sit on
        top of them, where the names lead to the base weights and not to what the model computes with."""
        return await self.run(self._on_plain_weights, work, *args, **kwargs)

    def _on_plain_weights(self, model: LoadedModel, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._applied is not None and not self._applied.weights_in_place:
            raise ApiError(
                409,
                f"deltas: the served model carries the {self._applied.method} deltas of run {self._applied.run_id} on top of its "
                "weights; weight statistics and weight edits read the stored weights, which leave them out: merge or detach the run first",
                "deltas",
            )
        return work(model, *args, **kwargs)

    # ---- a fine-tune run's deltas on the served model ----

    def deltas(self) -> AppliedState | None:
        """The applied run's state, without waiting for the model lock."""
        with self._state:
            return self._deltas

    async def attach(self, folder: Path, method: str) -> AppliedState:
        return await self.run(self._attach, folder, method)

    async def switch(self, enabled: bool) -> AppliedState | None:
        return await self.run(self._change, "enabled", lambda applied: applied.set_enabled(enabled))

    async def merge(self) -> AppliedState | None:
        return await self.run(self._change, "deltas", AppliedRun.merge)

    async def detach(self) -> None:
        await self.run(self._change, "deltas", AppliedRun.detach)

    def release(self) -> None:
        """Take unmerged deltas off the model, at shutdown: an injected model leaves as it came."""
        with self.lock:
            if self._applied is not None and not self._applied.merged:
                self._applied.detach()
                self._set_applied(None)

    def _attach(self, model: LoadedModel, folder: Path, method: str) -> AppliedState:
        if self._applied is not None:
            held = f"{self._applied.run_id}/{self._applied.method}"
            then = "reload the model first (it is merged)" if self._applied.merged else "detach it first"
            raise ApiError(409, f"run: the deltas of {held} are applied already; {then}", "run")
        applied = attach_run(model, folder, method)
        self._set_applied(applied)
        return applied.state

    def _change(self, model: LoadedModel, field: str, change: Callable[[AppliedRun], None]) -> AppliedState | None:
        applied = self._applied
        if applied is None:
            raise ApiError(409, f"{field}: no run's deltas are applied; POST /api/model/deltas first", field)
        if applied.merged:
            raise ApiError(409, f"{field}: the deltas of {applied.run_id}/{applied.method} are merged; reload the model to get its base weights back", field)
        change(applied)
        self._set_applied(applied if applied.attached else None)
        return self._deltas

    def _set_applied(self, applied: AppliedRun | None) -> None:
        with self._state:
            self._applied = applied
            self._deltas = applied.state if applied else None
