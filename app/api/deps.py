"""Dependencies as named types: what a route needs, declared in its signature."""

from __future__ import annotations

import secrets
from typing import Annotated, TypeVar

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from app.api.errors import ApiError
from app.api.mask_store import MaskStore
from app.api.service import ModelService
from app.api.settings import Settings
from outlier_core.tune.jobs import JobRunner

T = TypeVar("T")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="required when OUTLIER_LAB_API_KEY is set")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_service(request: Request) -> ModelService:
    return request.app.state.service


def get_masks(request: Request) -> MaskStore:
    return _started(request.app.state.masks)


def get_jobs(request: Request) -> JobRunner:
    return _started(request.app.state.jobs)


def _started(resource: T | None) -> T:
    """Stores open in the lifespan; an app served without it has none."""
    if resource is None:
        raise ApiError(503, "the server is starting; retry shortly", headers={"Retry-After": "1"})
    return resource


SettingsDep = Annotated[Settings, Depends(get_settings)]
ServiceDep = Annotated[ModelService, Depends(get_service)]
MasksDep = Annotated[MaskStore, Depends(get_masks)]
JobsDep = Annotated[JobRunner, Depends(get_jobs)]


def require_api_key(settings: SettingsDep, key: Annotated[str | None, Security(_api_key_header)]) -> None:
    """The key again, per route: `auth.ApiKeyGuard` has checked it before the body was read;
    this documents the header in the OpenAPI schema and guards a router mounted without it."""
    if settings.api_key is None:
        return
    if key is None or not secrets.compare_digest(key.encode(), settings.api_key.encode()):
        raise ApiError(401, "X-API-Key: missing or wrong API key", "X-API-Key")
