"""POST /api/intervene: baseline vs intervened vs control, weights restored after the call."""

from __future__ import annotations

from typing import Sequence

import torch
from fastapi import APIRouter

from app.api.deps import ServiceDep, SettingsDep
from app.api.schemas.common import DELTAS_ATTACHED, MODEL_RESPONSES
from app.api.schemas.intervene import IntervenIn, IntervenOut, InterventionIn, WeightIn
from outlier_core.errors import InputError
from outlier_core.intervene.corpus import bundled, from_text
from outlier_core.intervene.evaluate import evaluate
from outlier_core.intervene.interventions import Intervention
from outlier_core.intervene.weight_edits import WeightEdit, resolve_parameter
from outlier_core.load.models import LoadedModel, dtype_name
from outlier_core.load.tokens import encode

router = APIRouter(tags=["interventions"])


def _prefixed(prefix: str, build, *args):
    """Build a core object, naming the list entry at fault if it refuses."""
    try:
        return build(*args)
    except InputError as err:
        raise InputError(f"{prefix}.{err.field}", err.reason) from err


def _intervention(item: InterventionIn) -> Intervention:
    return Intervention(item.layer, item.position, item.dim, item.mode, item.value, item.site)


def _weight_edit(item: WeightIn) -> WeightEdit:
    return WeightEdit(item.param, tuple(item.index), item.mode, item.value)


def _check_values(model: LoadedModel, prefix: str, items: Sequence[InterventionIn | WeightIn]) -> None:
    """A value the model's dtype cannot hold would fail inside the forward pass."""
    limit = torch.finfo(model.dtype).max
    for i, item in enumerate(items):
        if item.value is not None and abs(item.value) > limit:
            raise InputError(f"{prefix}[{i}].value", f"is beyond what {dtype_name(model.dtype)} holds (±{limit:.3g})")


def checked_interventions(model: LoadedModel, items: Sequence[InterventionIn], seq_len: int) -> list[Intervention]:
    """The request's interventions as core objects that fit this model and prompt; a refusal names `interventions[i].field`."""
    _check_values(model, "interventions", items)
    interventions = [_prefixed(f"interventions[{i}]", _intervention, item) for i, item in enumerate(items)]
    for i, iv in enumerate(interventions):
        _prefixed(f"interventions[{i}]", iv.check, model, seq_len)
    return interventions


def _intervene(model: LoadedModel, body: IntervenIn, max_tokens: int) -> dict:
    seq_len = encode(model, body.text, body.prepend_bos, max_tokens).ids.shape[1]
    interventions = checked_interventions(model, body.interventions, seq_len)
    _check_values(model, "weights", body.weights)
    edits = [_prefixed(f"weights[{i}]", _weight_edit, item) for i, item in enumerate(body.weights)]
    for i, edit in enumerate(edits):
        _prefixed(f"weights[{i}]", resolve_parameter, model, edit)
    if body.eval_text is not None:
        eval_text = from_text(body.eval_text, "eval_text", "eval_text")
    else:
        eval_text = bundled(body.eval_corpus) if body.eval_corpus else None
    result = evaluate(
        model, body.text, interventions, edits,
        prepend_bos=body.prepend_bos, eval_text=eval_text, top_k=body.top_k, seed=body.seed, eval_window=max_tokens,
    )
    return result.to_json()


@router.post("/intervene", response_model=IntervenOut, responses=MODEL_RESPONSES | DELTAS_ATTACHED)
async def intervene(body: IntervenIn, service: ServiceDep, settings: SettingsDep) -> dict:
    run = service.run_on_plain_weights if body.weights else service.run  # weight edits name parameters
    return await run(_intervene, body, settings.max_tokens)
