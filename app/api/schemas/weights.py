"""Weight statistics: every norm and projection, one tensor in full, norms at given dims."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.api.schemas.common import FiniteFloat, Request
from outlier_core.observe.weights import WeightRule

RuleKind = Literal["sigma", "percentile", "mad"]
Kind = Literal["norm", "matrix", "embedding"]


class RuleQuery(Request):
    rule: RuleKind = Field(default="sigma", description="sigma: |w - mean| > kσ; percentile: outside the [100-k, k] percentiles; mad: |w - median| > k × 1.4826 × MAD")
    k: FiniteFloat = Field(default=3.0, gt=0, description="the rule's threshold (sigma/mad: multiples of σ; percentile: 50 < k < 100)")

    def weight_rule(self) -> WeightRule:
        return WeightRule(self.rule, self.k)


class WeightsQuery(RuleQuery):
    kinds: list[Kind] = Field(default=["norm", "matrix"], max_length=3)
    layers: list[int] | None = Field(default=None, max_length=1024, description="blocks to include (default all)")
    max_listed: int = Field(default=4, ge=0, le=256, description="outlier entries / rows / columns listed per tensor")


class TensorQuery(RuleQuery):
    bins: int = Field(default=64, ge=1, le=1024)
    max_listed: int = Field(default=32, ge=0, le=4096)


class NormsAtDimsQuery(Request):
    dims: list[int] = Field(min_length=1, max_length=256, description="residual-stream dims")
    layers: list[int] | None = Field(default=None, max_length=1024)


class RuleOut(BaseModel):
    kind: str
    k: float


class SummaryOut(BaseModel):
    count: int
    min: float
    max: float
    mean: float
    std: float
    median: float
    mad: float = Field(description="median |w - median|, unscaled")
    percentiles: dict[str, float]


class OutlierOut(BaseModel):
    index: list[int]
    value: float


class OutlierSetOut(BaseModel):
    rule: RuleOut
    low: float
    high: float
    count: int
    listed: list[OutlierOut] = Field(description="the farthest outside the bounds first")


class LineNormsOut(BaseModel):
    axis: str
    summary: SummaryOut
    outliers: OutlierSetOut = Field(description="rows or columns whose L2 norm the rule flags; index is (row,) or (column,)")


class HistogramOut(BaseModel):
    edges: list[float]
    counts: list[int]


class ParameterStatsOut(BaseModel):
    name: str = Field(description="plain Hugging Face name")
    kind: str
    layer: int | None
    layout: str | None
    effective_scale_offset: float = Field(description="the statistics describe offset + w (1.0 for Gemma-style norms)")
    note: str | None
    shape: list[int]
    summary: SummaryOut
    skewness: float | None
    excess_kurtosis: float | None
    bimodality: float | None = Field(description="Sarle's coefficient; above 5/9 hints at two modes")
    outliers: OutlierSetOut
    rows: LineNormsOut | None
    columns: LineNormsOut | None
    histogram: HistogramOut | None = Field(default=None, description="only for one tensor")


class WeightsOut(BaseModel):
    model: str
    rule: RuleOut
    kinds: list[str]
    norm_offset: float
    quantized_source: bool
    parameters: list[ParameterStatsOut]


class NormAtDimOut(BaseModel):
    layer: int
    norm: str
    parameter: str
    dim: int
    value: float = Field(description="effective scale, norm_offset + w")
    rank_abs: int = Field(description="entries of the vector with a smaller |value|: 0 is the smallest")
    rank_signed: int
    size: int


class NormsAtDimsOut(BaseModel):
    dims: list[int]
    effective_scale_offset: float
    entries: list[NormAtDimOut]
