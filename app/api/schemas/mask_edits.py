"""Mask edits: merge two masks into a new one, rename one, remove one of its parts."""

from __future__ import annotations

from pydantic import Field

from app.api.schemas.common import Request


class MergeIn(Request):
    ids: list[str] = Field(min_length=2, max_length=16, description="the masks to merge, in order: the parts of the first come first")
    name: str = Field(min_length=1, max_length=200, description="the new mask's name")


class RenameIn(Request):
    name: str = Field(min_length=1, max_length=200)
