"""GET /api/weights/layers/{layer}: a block's norms with their histograms and outliers, and its
matrices by name — what a weights view shows for one layer, in one request."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import ServiceDep
from app.api.schemas.common import DELTAS_ATTACHED, MODEL_RESPONSES
from app.api.schemas.layer_weights import LayerWeightsOut
from app.api.schemas.weights import TensorQuery
from outlier_core.load.models import LoadedModel
from outlier_core.observe.weights import (
    NamedParameter,
    ParameterStats,
    model_parameters,
    parameter_stats,
)

router = APIRouter(prefix="/weights/layers", tags=["weights"])


def _norm_stats(model: LoadedModel, p: NamedParameter, query: TensorQuery) -> ParameterStats:
    """As /api/weights/{name} describes a norm: the statistics of its effective scale, norm_offset + w."""
    return parameter_stats(model, p, query.weight_rule(), query.bins, query.max_listed, field="layer")


def _layer_weights(model: LoadedModel, layer: int, query: TensorQuery) -> dict:
    norms = model_parameters(model, ("norm",), (layer,))
    matrices = model_parameters(model, ("matrix",), (layer,))
    return {"layer": layer, "norms": [_norm_stats(model, p, query) for p in norms], "matrices": [p.name for p in matrices]}


@router.get("/{layer}", response_model=LayerWeightsOut, responses=MODEL_RESPONSES | DELTAS_ATTACHED)
async def layer_weights(layer: int, query: Annotated[TensorQuery, Query()], service: ServiceDep) -> dict:
    """Every norm of one block in full (histogram, outliers), and the names of its projection matrices."""
    return await service.run_on_plain_weights(_layer_weights, layer, query)
