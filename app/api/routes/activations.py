"""POST /api/activations: one layer's position × dim matrix, reduced to fit a heatmap."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.convert import significant
from app.api.deps import ServiceDep, SettingsDep
from app.api.schemas.common import MODEL_RESPONSES
from app.api.schemas.scan import ActivationsIn, ActivationsOut
from outlier_core.load.models import LoadedModel
from outlier_core.observe.capture import layer_matrix
from outlier_core.observe.heatmap import columns_for, dim_view

router = APIRouter(tags=["activations"])

# About 10 bytes a cell once rounded to 4 significant digits: this keeps a payload under 1 MB.
MAX_CELLS = 65_536


def _activations(model: LoadedModel, body: ActivationsIn, max_tokens: int) -> dict:
    matrix = layer_matrix(model, body.text, body.layer, body.site, body.prepend_bos, max_tokens)
    columns = columns_for(len(matrix.tokens), body.max_dims, MAX_CELLS)
    view = dim_view(matrix.values, body.view, columns, body.dim_start, body.dim_stop)
    return {
        "layer": matrix.layer,
        "site": matrix.site,
        "tokens": list(matrix.tokens),
        "d_model": matrix.values.shape[1],
        "view": view.view,
        "dims": list(view.dims),
        "block_size": view.block_size,
        "values": significant(view.values),
        "rest_max_abs": significant(view.rest_max_abs),
        "max_abs": float(matrix.values.abs().max()),
    }


@router.post("/activations", response_model=ActivationsOut, responses=MODEL_RESPONSES)
async def activations(body: ActivationsIn, service: ServiceDep, settings: SettingsDep) -> dict:
    return await service.run(_activations, body, settings.max_tokens)
