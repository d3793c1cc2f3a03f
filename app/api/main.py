"""`create_app`: settings, the model service, error handlers, the body limit, the routers.

The model loads in the lifespan, in a background thread, so health answers while it
loads; tests pass an already loaded model instead. The mask store and the job runner
open in the lifespan too, under `runs_dir`.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import anyio.to_thread
from fastapi import FastAPI

from app.api.errors import SafeJSONResponse, install_error_handlers
from app.api.limits import BodySizeLimit
from app.api.mask_store import MaskStore
from app.api.routes import api_router
from app.api.service import ModelService
from app.api.settings import Settings
from outlier_core.load.models import LoadedModel
from outlier_core.tune.jobs import FINISHED, JobRunner


def create_app(settings: Settings | None = None, model: LoadedModel | None = None) -> FastAPI:
    settings = settings or Settings()
    service = ModelService(model)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.masks = MaskStore(settings.runs_dir / "masks")
        app.state.jobs = jobs = JobRunner(settings.runs_dir)
        if model is None:
            service.start_load(settings.model, settings.device, settings.dtype)
        yield
        for status in jobs.list():  # a running job stops at its next step; its status says cancelled
            if status.state not in FINISHED:
                jobs.cancel(status.id)
        await anyio.to_thread.run_sync(jobs.close)
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
    app.include_router(api_router)
    return app
