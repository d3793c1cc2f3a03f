"""Task data uploads: a JSONL file of prompt/completion or chat rows, checked against the served
model's tokenizer and kept under runs_dir/task_data/, for fine-tunes and sweeps to name by id."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, File, UploadFile

from app.api.deps import ServiceDep, SettingsDep
from app.api.errors import ApiError
from app.api.schemas.common import ERROR_RESPONSES, MODEL_RESPONSES
from app.api.schemas.task_data import TaskDataListOut, TaskDataOut
from app.api.settings import Settings
from app.api.task_uploads import TooLarge, list_uploads, store_upload
from outlier_core.load.models import LoadedModel

router = APIRouter(tags=["task data"])


def _store(model: LoadedModel, filename: str | None, content: bytes, settings: Settings) -> TaskDataOut:
    try:
        upload = store_upload(settings.runs_dir, filename, content, model.tokenizer, settings.max_task_data_bytes)
    except TooLarge as err:
        raise ApiError(413, str(err), "file") from err
    return TaskDataOut(**vars(upload))


@router.post("/task-data", response_model=TaskDataOut, status_code=201, responses=MODEL_RESPONSES)
async def upload_task_data(service: ServiceDep, settings: SettingsDep, file: Annotated[UploadFile, File(description="DATA.jsonl")]) -> TaskDataOut:
    """Check a JSONL file row by row (422 naming its first bad line) and keep it; 413 past
    max_task_data_bytes. Name the returned id as `data` in a fine-tune or a sweep."""
    content = await file.read(settings.max_task_data_bytes + 1)  # one byte past the cap tells it is too large
    return await service.run(_store, file.filename, content, settings)


@router.get("/task-data", response_model=TaskDataListOut, responses=ERROR_RESPONSES)
async def uploaded_task_data(settings: SettingsDep) -> dict:
    return {"uploads": await anyio.to_thread.run_sync(list_uploads, settings.runs_dir)}
