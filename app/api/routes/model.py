"""The loaded model, the registry, and swapping the model in the background."""

from __future__ import annotations

import re

import torch
from fastapi import APIRouter

from app.api.deps import ServiceDep, SettingsDep
from app.api.schemas.common import ERROR_RESPONSES, MODEL_RESPONSES, error
from app.api.schemas.model import (
    LoadModelIn,
    LoadModelOut,
    LoadProgressOut,
    ModelOut,
    ModelsOut,
    RegistryEntryOut,
)
from app.api.settings import Settings
from outlier_core.errors import InputError
from outlier_core.load.models import (
    ANY_SOURCE,
    REGISTRY,
    ModelNotAvailable,
    ModelSources,
    dtype_name,
    parse_dtype,
    resolve_spec,
)
from outlier_core.load.progress import LoadProgress

router = APIRouter(tags=["model"])

_DEVICE = re.compile(r"cpu|cuda(:\d+)?|mps")


@router.get("/model", response_model=ModelOut, responses=MODEL_RESPONSES)
async def get_model(service: ServiceDep, settings: SettingsDep) -> ModelOut:
    model = service.current()
    return ModelOut(
        name=model.name,
        n_layers=model.n_layers,
        d_model=model.d_model,
        n_heads=model.n_heads,
        d_mlp=model.d_mlp,
        d_vocab=model.d_vocab,
        n_ctx=model.n_ctx,
        n_params=service.n_params(),
        device=model.device,
        dtype=dtype_name(model.dtype),
        norm_offset=model.norm_offset,
        quantized_source=model.quantized_source,
        bos_token_id=model.bos_token_id,
        max_tokens=min(settings.max_tokens, model.n_ctx),
        deltas=service.deltas(),
    )


@router.get("/models", response_model=ModelsOut, responses=ERROR_RESPONSES)
async def list_models(service: ServiceDep) -> ModelsOut:
    status = service.status()
    return ModelsOut(
        models=[RegistryEntryOut(name=spec.name, description=spec.description, loaded=spec.name == status.model) for spec in REGISTRY.values()],
        current=status.model,
        loading=status.loading,
        progress=progress_out(status.progress),
    )


def progress_out(progress: LoadProgress | None) -> LoadProgressOut | None:
    if progress is None:
        return None
    return LoadProgressOut(stage=progress.stage, done=progress.done, total=progress.total, unit=progress.unit, text=progress.text)


def _check_device(device: str | None) -> None:
    if device is None:
        return
    if not _DEVICE.fullmatch(device):
        raise InputError("device", "must be cpu, cuda, cuda:N or mps")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("device", "CUDA is not available on this server")


def allowed_sources(settings: Settings, name: str) -> ModelSources:
    """What a request may load: registry names, Hugging Face ids from the cache (unless the
    settings say no) and folders under the settings' model directories; the model the server
    was started with, from wherever the settings name it."""
    if name == settings.model:
        return ANY_SOURCE
    return ModelSources(hub=settings.hub_models, local_dirs=tuple(settings.model_dirs))


@router.post("/model", response_model=LoadModelOut, status_code=202, responses=ERROR_RESPONSES | error(409, "a model is already loading"))
async def load_model(body: LoadModelIn, service: ServiceDep, settings: SettingsDep) -> LoadModelOut:
    """Start loading a model in the background; poll /api/health until `ready` (its `progress`
    says which stage the load is in and how far along). A name the settings do not allow gets
    one 422, whatever exists on the server's disk."""
    sources = allowed_sources(settings, body.name)
    try:
        resolve_spec(body.name, sources)
    except ModelNotAvailable as err:
        raise InputError("name", str(err)) from err
    _check_device(body.device)
    try:
        parse_dtype(body.dtype, body.device or "cpu")
    except ValueError as err:
        raise InputError("dtype", str(err)) from err
    service.start_load(body.name, body.device, body.dtype, sources, placement=None if body.device else settings.placement())
    return LoadModelOut(name=body.name)
