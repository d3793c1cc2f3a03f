"""Selection masks: build from clicks, dims or the outlier rules; export and import.

A mask is answered as its manifest (`outlier_core.select.masks.MaskManifest`) with the
store's id; listings leave the indices out (`index` null) and name the stored masks that
cannot be read back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from app.api.schemas.common import FiniteFloat, Request
from outlier_core.intervene.corpus import BUNDLED
from outlier_core.select.mask_rules import ROLES, RULES, Suggestion
from outlier_core.select.masks import (
    MaskManifest,
    MaskSummary,
    PartManifest,
    SelectionMask,
)

Role = Literal[ROLES]  # type: ignore[valid-type]
RuleName = Literal[RULES]  # type: ignore[valid-type]


class MaskPartIn(Request):
    parameter: str = Field(min_length=1, description="plain Hugging Face name")
    kind: Literal["entries", "rows", "columns"] = Field(description="rows W[i, :] write output i; columns W[:, j] read input j (HF layout [out, in])")
    index: list[int] | list[list[int]] = Field(max_length=1_000_000, description="rows/columns: [i, ...]; entries: [[i, j], ...] (one index per axis)")
    source: str = Field(default="click", min_length=1, max_length=200, description="provenance: the rule or click that added it")


class DimIn(Request):
    layer: int
    dim: int


class MaskChangeIn(Request):
    parts: list[MaskPartIn] = Field(default=[], max_length=10_000)
    dims: list[DimIn] = Field(default=[], max_length=10_000, description="add what scales, reads and writes each (layer, residual dim)")
    roles: list[Role] = Field(default=list(ROLES), min_length=1, max_length=3, description="for dims: norm entry, reading columns, writing rows")


class MaskCreateIn(MaskChangeIn):
    name: str = Field(min_length=1, max_length=200)


class SuggestIn(Request):
    name: str = Field(default="outlier rules", min_length=1, max_length=200)
    budget: int = Field(ge=1, le=10**12, description="most parameters the mask may select")
    text: str | None = Field(default=None, min_length=1, description="the prompt whose activations the rules read (default: the bundled corpus)")
    corpus: Literal[BUNDLED] = "prose"  # type: ignore[valid-type]
    max_tokens: int = Field(default=128, ge=2, le=4096, description="tokens of the text or corpus to run (at most the server's max_tokens)")
    prepend_bos: bool = True
    rules: list[RuleName] = Field(default=list(RULES), min_length=1, max_length=len(RULES), description="in priority order")
    norm_rule: Literal["sigma", "percentile", "mad"] = "sigma"
    norm_k: FiniteFloat = Field(default=3.0, gt=0)
    window: int = Field(default=0, ge=0, le=1024, description="layer-window sparsity n: keep one norm layer per ±n layers (0: off)")
    contribution_share: FiniteFloat = Field(default=0.05, gt=0, le=1, description="super weights: least share of the massive value an entry writes")


@dataclass(frozen=True)
class MaskOut(MaskManifest):
    id: str

    @classmethod
    def of(cls, mask_id: str, mask: SelectionMask, with_index: bool = False) -> MaskOut:
        """The stored mask; listings and changes leave its indices out (null)."""
        return cls(**vars(mask.manifest(with_index)), id=mask_id)

    @classmethod
    def listed(cls, mask_id: str, summary: MaskSummary) -> MaskOut:
        """A stored mask as listings show it: its summary, indices null."""
        parts = tuple(PartManifest(**vars(part)) for part in summary.parts)
        return cls(**{**vars(summary), "parts": parts}, id=mask_id)


class UnreadableMaskOut(BaseModel):
    id: str
    reason: str = Field(description="why its files cannot be read back; DELETE removes them")


class MasksOut(BaseModel):
    masks: list[MaskOut] = Field(description="newest first; parts without indices")
    unreadable: list[UnreadableMaskOut] = Field(default=[], description="stored masks whose files cannot be read back, newest first")


@dataclass(frozen=True)
class SuggestionOut(Suggestion):
    mask: MaskOut  # saved in the store, listed without indices
