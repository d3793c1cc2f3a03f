"""Uploaded task data: what an upload holds, and the id a fine-tune or sweep names it by."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

TaskDataId = Annotated[str, Field(pattern=r"^task-[0-9a-f]{12}$", description="an upload's id, from POST /api/task-data")]


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
