"""Scan, activations and attention."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.api.schemas.common import FiniteFloat, Request, Site, Text
from app.api.schemas.intervene import InterventionIn
from outlier_core.observe.detect import PAPER_RULE, MassiveRule


class ScanIn(Request):
    text: Text
    prepend_bos: bool = True
    site: Site = "resid_post"
    top_k: int = Field(default=3, ge=1, le=100)
    abs_threshold: FiniteFloat | None = Field(default=None, ge=0, description="massive if |x| > this (paper: 100)")
    median_ratio: FiniteFloat | None = Field(default=None, gt=0, description="and |x| > this × median |x| of the layer (paper: 1000)")

    def rule(self) -> MassiveRule:
        return MassiveRule(
            abs_threshold=PAPER_RULE.abs_threshold if self.abs_threshold is None else self.abs_threshold,
            median_ratio=PAPER_RULE.median_ratio if self.median_ratio is None else self.median_ratio,
        )


class ActivationsIn(Request):
    text: Text
    layer: int
    site: Site = "resid_post"
    prepend_bos: bool = True
    view: Literal["top", "block", "range"] = Field(
        default="top",
        description="top: the max_dims dims of largest peak |x| plus the max |x| of the rest; "
        "block: consecutive dims max-pooled (sign kept) into max_dims columns; range: dims dim_start..dim_stop-1 unpooled",
    )
    max_dims: int = Field(default=128, ge=1, le=1024, description="columns wanted; fewer come back when the prompt is long, to keep the payload under 1 MB")
    dim_start: int = Field(default=0, description="first dim of a range view")
    dim_stop: int | None = Field(default=None, description="end (exclusive) of a range view")


class ActivationsOut(BaseModel):
    layer: int
    site: str
    tokens: list[str]
    d_model: int = Field(description="dims in the full layer")
    view: str
    dims: list[int] = Field(description="the dim each column shows; for block, the first dim of its block")
    block_size: int
    values: list[list[float]] = Field(description="(positions, columns), signed, rounded to 4 significant digits")
    rest_max_abs: list[float] = Field(description="per position, max |x| over the dims not shown")
    max_abs: float = Field(description="max |x| over the whole layer")


class AttentionIn(Request):
    text: Text
    layer: int
    prepend_bos: bool = True
    heads: list[int] | None = Field(default=None, max_length=1024, description="heads to return (default all)")
    mean_heads: bool = Field(default=False, description="return one pattern, the mean over the chosen heads")
    interventions: list[InterventionIn] = Field(default=[], max_length=256, description="also return the patterns with these applied, as /api/intervene takes them")


class AttentionOut(BaseModel):
    layer: int
    tokens: list[str]
    heads: list[int] = Field(description="the head of each pattern; empty when mean_heads")
    positions: list[int] = Field(description=(
        "the first prompt position of each pattern row and column: every position, unless the patterns would pass 100,000 "
        "values; then position 0 alone and equal runs after it, each cell the mean over its queries of the attention they put on its keys"
    ))
    patterns: list[list[list[float]]] = Field(description="(heads, query, key), rounded to 4 decimals")
    sink_share: list[float] = Field(description="per returned pattern, the mean attention on position 0")
    patterns_after: list[list[list[float | None]]] | None = Field(
        default=None, description="the same patterns with the interventions applied, rounded alike; null without interventions, null cells where they overflowed the model",
    )
    sink_share_after: list[float | None] | None = Field(default=None, description="per pattern after, the mean attention on position 0; null without interventions")
