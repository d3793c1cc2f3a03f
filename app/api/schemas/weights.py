"""Weight statistics queries; the answers are the core's own dataclasses (`outlier_core.observe.weights`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.api.schemas.common import FiniteFloat, Request
from outlier_core.observe.tensor_stats import WeightRule

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
