"""One block's weights in one answer: its norms in full, its matrices by name."""

from __future__ import annotations

from pydantic import BaseModel, Field

from outlier_core.observe.weights import ParameterStats


class LayerWeightsOut(BaseModel):
    layer: int
    norms: list[ParameterStats] = Field(description="every norm weight of the block, as /api/weights/{name} gives it (histogram included)")
    matrices: list[str] = Field(description="the block's projection matrices, by the names /api/weights/{name} takes")
