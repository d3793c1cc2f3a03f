"""Mask edits the workbench needs: merge masks into a new one (the originals stay, so merging
can be undone by going back to one), rename a mask, and remove one of its parts.

Each works on the stored masks alone (no model): a mask may belong to another model than
the one serving. The store touches files, so every edit runs in a worker thread.
"""

from __future__ import annotations

import dataclasses

import anyio.to_thread
from fastapi import APIRouter

from app.api.deps import MasksDep
from app.api.mask_store import MaskStore
from app.api.schemas.common import ERROR_RESPONSES, error
from app.api.schemas.mask_edits import MergeIn, RenameIn
from app.api.schemas.masks import MaskOut
from outlier_core.errors import InputError
from outlier_core.select.masks import SelectionMask

router = APIRouter(prefix="/masks", tags=["masks"])

NOT_FOUND = error(404, "no such mask")
FULL = error(409, "the server keeps no more masks, or no more bytes of them")


def merged(masks: list[SelectionMask], name: str) -> SelectionMask:
    """One mask holding every part of `masks`, in order; all must belong to the same model."""
    first = masks[0]
    for i, other in enumerate(masks[1:], start=1):
        if (other.model, other.n_model_params) != (first.model, first.n_model_params):
            raise InputError(f"ids[{i}]", f"belongs to {other.model}, but ids[0] to {first.model}: masks of different models do not merge")
    union = first.renamed(name)
    for other in masks[1:]:
        union = union.with_parts(list(other.parts), other.shapes)
    return union


def without_part(mask: SelectionMask, part: int) -> SelectionMask:
    if not 0 <= part < len(mask.parts):
        raise InputError("part", f"is {part}; the mask has {len(mask.parts)} parts (0 to {len(mask.parts) - 1})")
    return dataclasses.replace(mask, parts=mask.parts[:part] + mask.parts[part + 1:])


def _merge(body: MergeIn, store: MaskStore) -> MaskOut:
    mask = merged([store.get(mask_id) for mask_id in body.ids], body.name)
    return MaskOut.of(store.add(mask), mask)


def _replace(store: MaskStore, mask_id: str, mask: SelectionMask) -> MaskOut:
    store.replace(mask_id, mask)
    return MaskOut.of(mask_id, mask)


@router.post("/merge", response_model=MaskOut, status_code=201, responses=ERROR_RESPONSES | NOT_FOUND | FULL)
async def merge_masks(body: MergeIn, store: MasksDep) -> MaskOut:
    """A new mask with the parts of every mask given; they stay as they were."""
    for mask_id in body.ids:
        store.summary(mask_id)
    return await anyio.to_thread.run_sync(_merge, body, store)


@router.patch("/{mask_id}", response_model=MaskOut, responses=ERROR_RESPONSES | NOT_FOUND)
async def rename_mask(mask_id: str, body: RenameIn, store: MasksDep) -> MaskOut:
    store.summary(mask_id)
    mask = await anyio.to_thread.run_sync(store.get, mask_id)
    return await anyio.to_thread.run_sync(_replace, store, mask_id, mask.renamed(body.name))


@router.delete("/{mask_id}/parts/{part}", response_model=MaskOut, responses=ERROR_RESPONSES | NOT_FOUND)
async def remove_part(mask_id: str, part: int, store: MasksDep) -> MaskOut:
    """The mask without its part number `part` (0-based, in the order the parts are listed)."""
    store.summary(mask_id)
    mask = await anyio.to_thread.run_sync(store.get, mask_id)
    return await anyio.to_thread.run_sync(_replace, store, mask_id, without_part(mask, part))
