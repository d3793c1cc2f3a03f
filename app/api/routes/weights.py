"""Weight statistics from the unprocessed weights: all tensors, one tensor, norms at dims."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import ServiceDep
from app.api.schemas.common import DELTAS_ATTACHED, MODEL_RESPONSES
from app.api.schemas.weights import (
    NormsAtDimsOut,
    NormsAtDimsQuery,
    ParameterStatsOut,
    TensorQuery,
    WeightsOut,
    WeightsQuery,
)
from outlier_core.errors import InputError
from outlier_core.load.model_cache import ModelCache
from outlier_core.load.models import LoadedModel
from outlier_core.observe.weights import (
    KINDS,
    QUANTIZED_NOTE,
    ParameterStats,
    model_parameters,
    model_weight_stats,
    norm_at_dims,
    tensor_stats,
)

router = APIRouter(prefix="/weights", tags=["weights"])

# Statistics of every tensor take seconds on a real model; they change only with the weights.
_all_stats = ModelCache(size=8)


def _weights(model: LoadedModel, query: WeightsQuery) -> dict:
    rule, kinds = query.weight_rule(), tuple(dict.fromkeys(query.kinds))
    layers = None if query.layers is None else tuple(sorted(set(query.layers)))
    key = (rule, kinds, layers, query.max_listed)
    stats = _all_stats.get(model, key, lambda: model_weight_stats(model, rule, kinds, layers, max_listed=query.max_listed))
    payload = stats.to_json()
    for parameter in payload["parameters"]:
        parameter["histogram"] = None  # one tensor's route carries it; 64 bins × every tensor is too much here
    return payload


def _tensor(model: LoadedModel, name: str, query: TensorQuery) -> dict:
    found = {p.name: p for p in model_parameters(model, KINDS)}
    if name not in found:
        hint = next(iter(found), "")
        raise InputError("name", f"no norm, matrix or embedding named {name!r}; names look like {hint!r}")
    p = found[name]
    offset = model.norm_offset if p.kind == "norm" else 0.0  # a norm scales by offset + w
    note = QUANTIZED_NOTE if model.quantized_source and p.kind != "norm" else None
    stats = tensor_stats(p.tensor.detach() + offset if offset else p.tensor, query.weight_rule(), query.bins, query.max_listed, field="name")
    return ParameterStats(p.name, p.kind, p.layer, p.layout, offset, note, stats).to_json()


@router.get("", response_model=WeightsOut, responses=MODEL_RESPONSES | DELTAS_ATTACHED)
async def weights(query: Annotated[WeightsQuery, Query()], service: ServiceDep) -> dict:
    """Statistics and outliers of every norm weight and projection matrix (no histograms)."""
    return await service.run_on_plain_weights(_weights, query)


@router.get("/at-dims", response_model=NormsAtDimsOut, responses=MODEL_RESPONSES | DELTAS_ATTACHED)
async def norms_at_dims(query: Annotated[NormsAtDimsQuery, Query()], service: ServiceDep) -> dict:
    """Each layer's norm scale at the given residual dims, and its rank in the vector."""
    return (await service.run_on_plain_weights(norm_at_dims, query.dims, None if query.layers is None else tuple(query.layers))).to_json()


@router.get("/{name}", response_model=ParameterStatsOut, responses=MODEL_RESPONSES | DELTAS_ATTACHED)
async def tensor(name: str, query: Annotated[TensorQuery, Query()], service: ServiceDep) -> dict:
    """One tensor by its Hugging Face name: histogram, outlier entries, outlier rows and columns."""
    return await service.run_on_plain_weights(_tensor, name, query)
