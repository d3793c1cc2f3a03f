"""Interventions as data: activation coordinates and weight entries, with their effect."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, ValidationInfo, field_validator

from app.api.schemas.common import FiniteFloat, Request, Site, Text
from outlier_core.intervene.corpus import BUNDLED, MAX_FILE_BYTES

Selector = int | list[int] | Literal["all"]


class InterventionIn(Request):
    layer: int
    site: Site = "resid_post"
    position: Selector = Field(description="a position, a list of positions, or 'all'")
    dim: Selector = Field(description="a dim, a list of dims, or 'all'")
    mode: Literal["zero", "mean", "scale", "set"] = Field(default="zero", description="mean: the reference-corpus mean of the coordinate")
    value: FiniteFloat | None = Field(default=None, description="the factor for scale, the new value for set")


class WeightIn(Request):
    param: str = Field(min_length=1, validation_alias=AliasChoices("param", "parameter"), description="plain Hugging Face name, e.g. model.layers.11.mlp.down_proj.weight")
    index: list[int | Literal["all"]] = Field(max_length=8, description="one entry per axis (HF layout [out, in]): [507, 1487] an entry, [507, 'all'] a row")
    mode: Literal["zero", "scale", "set"] = "zero"
    value: FiniteFloat | None = None


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


class LossOut(BaseModel):
    loss: float | None = Field(description="mean next-token NLL in nats; null if not finite")
    perplexity: float | None = Field(description="null if it overflows")
    n_tokens: int


class ArmsOut(BaseModel):
    baseline: LossOut
    intervened: LossOut
    control: LossOut


class InterventionOut(BaseModel):
    layer: int
    site: str
    position: Selector
    dim: Selector
    mode: str
    value: float | None


class WeightEditOut(BaseModel):
    parameter: str
    index: list[int | str]
    mode: str
    value: float | None


class PredictionOut(BaseModel):
    token_id: int
    token: str
    prob: float


class PredictionsOut(BaseModel):
    before: list[PredictionOut]
    after: list[PredictionOut]


class LayerEffectOut(BaseModel):
    layer: int
    max_abs_before: float
    max_abs_after: float
    sink_share_before: float
    sink_share_after: float


class IntervenOut(ArmsOut):
    prompt: ArmsOut = Field(description="the same three arms scored on the prompt")
    eval_source: str
    prepend_bos: bool
    tokens: list[str]
    interventions: list[InterventionOut]
    weight_edits: list[WeightEditOut]
    control_interventions: list[InterventionOut] = Field(description="the same interventions moved to random ordinary coordinates")
    control_weight_edits: list[WeightEditOut]
    top_k: PredictionsOut = Field(description="next-token predictions after the prompt")
    layers: list[LayerEffectOut] = Field(description="per layer, max |x| and sink share before and after")
