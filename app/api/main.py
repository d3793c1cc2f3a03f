"""`create_app`: settings, the model service, error handlers, the API key, the body limit, the routers.

The model loads in the lifespan, in a background thread, so health answers while it
loads; tests pass an already loaded model instead. The mask store and the job runner
open in the lifespan too, under `runs_dir`.
"""

from __future__ import annotations

import functools
from contextlib import asynccontextmanager
from typing import AsyncIterator

import anyio.to_thread
from fastapi import FastAPI

from app.api.auth import ApiKeyGuard
from app.api.errors import SafeJSONResponse, install_error_handlers
from app.api.limits import BodySizeLimit
from app.api.mask_store import MaskLimits, MaskStore
from app.api.model_queue import CallerMiddleware
from app.api.routes import api_router
from app.api.routes.jobs import launch_options
from app.api.service import ModelService
from app.api.settings import Settings
from outlier_core.load.models import LoadedModel
from outlier_core.tune.jobs import JobRunner
from outlier_core.tune.run_process import resume_job

SHUTDOWN_REASON = "the server shut down while the job was queued or running"


def create_app(settings: Settings | None = None, model: LoadedModel | None = None) -> FastAPI:
    settings = settings or Settings()
    service = ModelService(model)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limits = MaskLimits(settings.max_mask_coordinates, settings.max_masks, settings.max_mask_disk_bytes)
        app.state.masks = await anyio.to_thread.run_sync(MaskStore, settings.runs_dir / "masks", limits)  # reads every header
        app.state.jobs = jobs = JobRunner(
            settings.runs_dir, settings.max_concurrent_runs, settings.max_queued_runs, resume=resume_job(launch_options(settings))
        )
        if model is None:
            service.start_load(settings.model, settings.device, settings.dtype, placement=settings.placement())
        yield
        # A running job's process stops at its next step, its status cancelled with this reason;
        # or, when the settings say so, it trains on and the next server reattaches to it.
        close = functools.partial(jobs.close, cancel_reason=SHUTDOWN_REASON, keep_running=settings.keep_runs_on_shutdown)
        await anyio.to_thread.run_sync(close)
        await anyio.to_thread.run_sync(service.release)

    app = FastAPI(
        title="Outlier Lab API",
        description="Find, poke and fine-tune the outliers of a transformer. One model per process.",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
    )
    app.state.settings = settings
    app.state.service = service
    app.state.masks = app.state.jobs = None  # opened in the lifespan: they live under runs_dir
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(CallerMiddleware)  # who asks and for what, for the model's queue
    app.add_middleware(ApiKeyGuard, api_key=settings.api_key, open_docs=settings.open_docs)  # outermost: before the body is read
    app.include_router(api_router)
    return app
