"""Uploaded task data: what an upload holds, and the `data` fields that name one by id."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field

from app.api.task_uploads import UPLOAD_ID


def data_choice(bundled: tuple[str, ...], description: str) -> Any:
    """A `data` field: one of `bundled`, or an upload's id; refused as `data` naming both kinds."""

    def check(value: str) -> str:
        if value in bundled or UPLOAD_ID.fullmatch(value):
            return value
        raise ValueError(f"choose {', '.join(bundled)}, or an uploaded task's id (task-…, from POST /api/task-data)")

    return Annotated[str, Field(min_length=1, max_length=64, description=description, examples=[*bundled, "task-0123456789ab"]), AfterValidator(check)]


class TaskDataOut(BaseModel):
    id: str = Field(description="name it as `data` in POST /api/finetune or /api/sweeps")
    name: str = Field(description="the file's name as stored; a run's data source")
    rows: int
    train: int = Field(description="rows trained on")
    held_out: int = Field(description="rows held out (a seeded fifth); a run scores at most its cap of them")
    bytes: int


class TaskDataEntry(BaseModel):
    id: str
    name: str
    bytes: int


class TaskDataListOut(BaseModel):
    uploads: list[TaskDataEntry] = Field(description="newest first")
