"""Weight statistics from the unprocessed weights: all tensors, one tensor, norms at dims."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import ServiceDep
from app.api.schemas.common import DELTAS_ATTACHED, MODEL_RESPONSES
from app.api.schemas.weights import NormsAtDimsQuery, TensorQuery, WeightsQuery
from outlier_core.load.model_cache import ModelCache
from outlier_core.load.models import LoadedModel
from outlier_core.observe.weights import (
    ModelWeightStats,
    NormAtDims,
    ParameterStats,
    model_weight_stats,
    named_parameter,
    norm_at_dims,
    parameter_stats,
)

router = APIRouter(prefix="/weights", tags=["weights"])

# Statistics of every tensor take seconds on a real model; they change only with the weights.
_all_stats = ModelCache(size=8)


def _weights(model: LoadedModel, query: WeightsQuery) -> ModelWeightStats:
    rule, kinds = query.weight_rule(), tuple(dict.fromkeys(query.kinds))
    layers = None if query.layers is None else tuple(sorted(set(query.layers)))
    key = (rule, kinds, layers, query.max_listed)
    stats = _all_stats.get(model, key, lambda: model_weight_stats(model, rule, kinds, layers, max_listed=query.max_listed))
    # one tensor's route carries the histogram; 64 bins × every tensor is too much here
    return replace(stats, parameters=tuple(replace(p, histogram=None) for p in stats.parameters))


def _tensor(model: LoadedModel, name: str, query: TensorQuery) -> ParameterStats:
    return parameter_stats(model, named_parameter(model, name), query.weight_rule(), query.bins, query.max_listed, field="name")


@router.get("", response_model=ModelWeightStats, responses=MODEL_RESPONSES | DELTAS_ATTACHED)
async def weights(query: Annotated[WeightsQuery, Query()], service: ServiceDep) -> ModelWeightStats:
    """Statistics and outliers of every norm weight and projection matrix (no histograms)."""
    return await service.run_on_plain_weights(_weights, query)


@router.get("/at-dims", response_model=NormAtDims, responses=MODEL_RESPONSES | DELTAS_ATTACHED)
async def norms_at_dims(query: Annotated[NormsAtDimsQuery, Query()], service: ServiceDep) -> NormAtDims:
    """Each layer's norm scale at the given residual dims, and its rank in the vector."""
    return await service.run_on_plain_weights(norm_at_dims, query.dims, None if query.layers is None else tuple(query.layers))


@router.get("/{name}", response_model=ParameterStats, responses=MODEL_RESPONSES | DELTAS_ATTACHED)
async def tensor(name: str, query: Annotated[TensorQuery, Query()], service: ServiceDep) -> ParameterStats:
    """One tensor by its Hugging Face name: histogram, outlier entries, outlier rows and columns."""
    return await service.run_on_plain_weights(_tensor, name, query)
