"""Interventions as data: activation coordinates and weight entries. The answer is the
core's own `InterventionResult` (`outlier_core.intervene.evaluate`)."""

from __future__ import annotations

from typing import Literal, Sequence

from pydantic import AliasChoices, Field, ValidationInfo, field_validator

from app.api.schemas.common import FiniteFloat, Request, Site, Text
from outlier_core.errors import within
from outlier_core.intervene.corpus import BUNDLED, MAX_FILE_BYTES
from outlier_core.intervene.interventions import Intervention
from outlier_core.intervene.weight_edits import WeightEdit

Selector = int | list[int] | Literal["all"]


class InterventionIn(Request):
    layer: int
    site: Site = "resid_post"
    position: Selector = Field(description="a position, a list of positions, or 'all'")
    dim: Selector = Field(description="a dim, a list of dims, or 'all'")
    mode: Literal["zero", "mean", "scale", "set"] = Field(default="zero", description="mean: the reference-corpus mean of the coordinate")
    value: FiniteFloat | None = Field(default=None, description="the factor for scale, the new value for set")

    def core(self) -> Intervention:
        return Intervention(self.layer, self.position, self.dim, self.mode, self.value, self.site)


class WeightIn(Request):
    param: str = Field(min_length=1, validation_alias=AliasChoices("param", "parameter"), description="plain Hugging Face name, e.g. model.layers.11.mlp.down_proj.weight")
    index: list[int | Literal["all"]] = Field(max_length=8, description="one entry per axis (HF layout [out, in]): [507, 1487] an entry, [507, 'all'] a row")
    mode: Literal["zero", "scale", "set"] = "zero"
    value: FiniteFloat | None = None

    def core(self) -> WeightEdit:
        return WeightEdit(self.param, tuple(self.index), self.mode, self.value)


def as_core(items: Sequence[InterventionIn] | Sequence[WeightIn], field: str) -> list:
    """Each entry as its core object, which checks itself; a refusal names the entry, `field[i].<field>`."""
    found = []
    for i, item in enumerate(items):
        with within(f"{field}[{i}]"):
            found.append(item.core())
    return found


class IntervenIn(Request):
    text: Text
    eval_text: str | None = Field(default=None, min_length=1, max_length=MAX_FILE_BYTES, description="score perplexity on this text instead of the prompt")
    eval_corpus: Literal[BUNDLED] | None = Field(default=None, description="or on a bundled corpus")  # type: ignore[valid-type]
    prepend_bos: bool = True
    interventions: list[InterventionIn] = Field(default=[], max_length=256)
    weights: list[WeightIn] = Field(default=[], max_length=256, validation_alias=AliasChoices("weights", "weight_edits"), description="restored after the call")
    top_k: int = Field(default=5, ge=1, le=50, description="next-token predictions listed")
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="picks the control coordinates")

    @field_validator("eval_corpus")
    @classmethod
    def _one_evaluation_source(cls, corpus: str | None, info: ValidationInfo) -> str | None:
        if corpus is not None and info.data.get("eval_text") is not None:
            raise ValueError("give eval_text or eval_corpus, not both")
        return corpus
