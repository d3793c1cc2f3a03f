"""Selection masks: create from clicks and dims, suggest by the outlier rules, export, import.

Every mask's size is counted from its parts, after its parameters are checked against the
model and before any coordinate is listed, and refused past the store's limit. The store
touches files: it is called from worker threads, never on the event loop.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import anyio.to_thread
from fastapi import APIRouter, File, Form, Query, Response, UploadFile

from app.api.deps import MasksDep, ServiceDep, SettingsDep
from app.api.mask_store import MaskStore
from app.api.schemas.common import ERROR_RESPONSES, MODEL_RESPONSES, error
from app.api.schemas.masks import (
    MaskChangeIn,
    MaskCreateIn,
    MaskOut,
    MasksOut,
    SuggestIn,
    SuggestionOut,
    UnreadableMaskOut,
)
from outlier_core.errors import InputError
from outlier_core.intervene.corpus import bundled
from outlier_core.load.models import LoadedModel
from outlier_core.observe.tensor_stats import WeightRule
from outlier_core.select.mask_files import (
    check_stored,
    from_json,
    parse_json,
    read_safetensors,
)
from outlier_core.select.mask_rules import (
    RuleConfig,
    extended,
    prompt_from_text,
    suggest_mask,
)
from outlier_core.select.masks import SelectionMask

router = APIRouter(prefix="/masks", tags=["masks"])

NOT_FOUND = error(404, "no such mask")


def _changed(model: LoadedModel, mask: SelectionMask, change: MaskChangeIn, store: MaskStore) -> SelectionMask:
    parts = [(p.parameter, p.kind, p.index, p.source) for p in change.parts]
    dims = [(d.layer, d.dim) for d in change.dims]
    return extended(model, mask, parts, dims, tuple(change.roles), max_count=store.limits.coordinates)


def _create(model: LoadedModel, body: MaskCreateIn, store: MaskStore) -> MaskOut:
    mask = _changed(model, SelectionMask.empty(model, body.name), body, store)
    return MaskOut.of(store.add(mask), mask)


def _extend(model: LoadedModel, mask_id: str, body: MaskChangeIn, store: MaskStore) -> MaskOut:
    mask = _changed(model, store.get(mask_id), body, store)
    store.replace(mask_id, mask)
    return MaskOut.of(mask_id, mask)


def _suggest(model: LoadedModel, body: SuggestIn, store: MaskStore, max_tokens: int) -> SuggestionOut:
    if body.budget > store.limits.coordinates:
        raise InputError("budget", f"is {body.budget:,}; this server takes masks of at most {store.limits.coordinates:,} parameters")
    config = RuleConfig(
        rules=tuple(body.rules),
        norm_rule=WeightRule(body.norm_rule, body.norm_k),
        window=body.window,
        contribution_share=body.contribution_share,
    )
    text = body.text if body.text is not None else bundled(body.corpus).text
    prompt = prompt_from_text(model, text, body.prepend_bos, min(body.max_tokens, max_tokens))  # the server's limit holds here too
    suggestion = suggest_mask(model, prompt, body.budget, config, body.name)
    return SuggestionOut(MaskOut.of(store.add(suggestion.mask), suggestion.mask), suggestion.found, suggestion.budget)


def _import(model: LoadedModel, data: bytes, name: str | None, store: MaskStore) -> MaskOut:
    """A JSON manifest or its .safetensors twin, told apart by their first byte (never pickle).

    The parts are checked against the model and the mask's size against the store's limit
    before a coordinate is listed (the twin's stored coordinates are compared after that)."""
    if data.lstrip()[:1] == b"{":
        mask, stored = from_json(parse_json(data, "file")), None
    else:
        mask, stored = read_safetensors(data)
    mask.validate(model)
    mask.check_size(store.limits.coordinates)
    if stored is not None:
        check_stored(mask, stored)
    if name is not None:
        mask = mask.renamed(name)
    return MaskOut.of(store.add(mask), mask)


@router.get("", response_model=MasksOut, responses=ERROR_RESPONSES)
async def list_masks(store: MasksDep) -> MasksOut:
    """Newest first; stored masks whose files cannot be read back are listed apart, with the reason."""
    readable, unreadable = await anyio.to_thread.run_sync(store.list)
    return MasksOut(
        masks=[MaskOut.listed(mask_id, summary) for mask_id, summary in readable],
        unreadable=[UnreadableMaskOut(id=u.id, reason=u.reason) for u in unreadable],
    )


@router.post("", response_model=MaskOut, status_code=201, responses=MODEL_RESPONSES)
async def create_mask(body: MaskCreateIn, service: ServiceDep, store: MasksDep) -> MaskOut:
    """A new mask from clicked parts and/or the parameters around activation dims."""
    return await service.run(_create, body, store)


@router.post("/suggest", response_model=SuggestionOut, status_code=201, responses=MODEL_RESPONSES)
async def suggest(body: SuggestIn, service: ServiceDep, store: MasksDep, settings: SettingsDep) -> SuggestionOut:
    """The researcher's outlier rules in priority order, trimmed to the budget, saved as a new mask."""
    return await service.run(_suggest, body, store, settings.max_tokens)


@router.post("/import", response_model=MaskOut, status_code=201, responses=MODEL_RESPONSES)
async def import_mask(
    service: ServiceDep,
    store: MasksDep,
    file: Annotated[UploadFile, File(description="MASK.json or MASK.safetensors")],
    name: Annotated[str | None, Form(min_length=1, max_length=200)] = None,
) -> MaskOut:
    """Load a mask file, check it against the serving model, and keep it."""
    return await service.run(_import, await file.read(), name, store)


@router.get("/{mask_id}", response_model=MaskOut, responses=ERROR_RESPONSES | NOT_FOUND)
async def get_mask(mask_id: str, store: MasksDep) -> MaskOut:
    """The mask with every part's indices."""
    return await anyio.to_thread.run_sync(lambda: MaskOut.of(mask_id, store.get(mask_id), True))


@router.post("/{mask_id}/parts", response_model=MaskOut, responses=MODEL_RESPONSES | NOT_FOUND)
async def add_parts(mask_id: str, body: MaskChangeIn, service: ServiceDep, store: MasksDep) -> MaskOut:
    """Add clicked parts and/or the parameters around activation dims to a mask."""
    store.summary(mask_id)
    return await service.run(_extend, mask_id, body, store)


@router.delete("/{mask_id}", status_code=204, responses=ERROR_RESPONSES | NOT_FOUND)
async def delete_mask(mask_id: str, store: MasksDep) -> None:
    await anyio.to_thread.run_sync(store.delete, mask_id)


@router.get(
    "/{mask_id}/export",
    response_class=Response,
    responses=ERROR_RESPONSES | {200: {"content": {"application/json": {}, "application/octet-stream": {}}, "description": "the mask file"}} | NOT_FOUND,
)
async def export_mask(mask_id: str, store: MasksDep, file_format: Annotated[Literal["json", "safetensors"], Query(alias="format")] = "json") -> Response:
    """Download the JSON manifest or the .safetensors twin (index tensors per parameter)."""
    mask = await anyio.to_thread.run_sync(store.get, mask_id)
    filename = (re.sub(r"[^A-Za-z0-9._-]+", "-", mask.name).strip("-.") or "mask") + f".{file_format}"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if file_format == "json":
        body = await anyio.to_thread.run_sync(lambda: mask.manifest_text().encode())
        return Response(body, media_type="application/json", headers=headers)
    body = await anyio.to_thread.run_sync(mask.to_safetensors_bytes)
    return Response(body, media_type="application/octet-stream", headers=headers)
