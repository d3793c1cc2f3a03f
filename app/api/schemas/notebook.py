"""The lab notebook: entries in, entries (with their code) out."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.api.schemas.common import Request

SESSION_PATTERN = r"^[A-Za-z0-9-]{8,64}$"  # the browser session the notebook belongs to
Kind = Literal["scan", "intervene", "mask", "run", "compare"]


class NotebookIn(Request):
    session: str = Field(pattern=SESSION_PATTERN, description="the browser session the notebook belongs to")
    kind: Kind
    title: str = Field(min_length=1, max_length=300)
    inputs: dict = Field(description="what was asked: the request, as the UI sent it")
    results: dict = Field(default={}, description="what came back, the numbers worth keeping")


class CodeOut(BaseModel):
    cli: str | None = Field(description="the outlier-lab command that reproduces the entry, when the CLI can say it")
    python: str = Field(description="the Python call that reproduces it")
    note: str | None = Field(default=None, description="why there is no command, or what to do first")


class NotebookEntryOut(BaseModel):
    id: str
    session: str
    created: float = Field(description="Unix time")
    kind: Kind
    title: str
    inputs: dict
    results: dict
    code: CodeOut


class NotebookOut(BaseModel):
    entries: list[NotebookEntryOut] = Field(description="newest first")
