"""Tokenize: a prompt's pieces without a forward pass."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.api.schemas.common import Request, Text


class TokenizeIn(Request):
    text: Text
    prepend_bos: bool = True


class TokensOut(BaseModel):
    tokens: list[str] = Field(description="one piece per position, BOS included when prepended; bytes of a split character as <0xF0>")
    max_tokens: int = Field(description="the longest prompt this server accepts, BOS included")
