"""A fine-tune run's deltas on the served model: attach one, switch it off and on, merge it, detach it.

The served model carries at most one run. Attaching and switching run under the model
lock like any forward pass; reading the state does not wait for it. Fine-tune jobs train
a fresh copy of the model in a run process of their own, never the one carrying these deltas.
"""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ServiceDep, SettingsDep
from app.api.errors import ApiError
from app.api.schemas.common import ERROR_RESPONSES, MODEL_RESPONSES, error
from app.api.schemas.deltas import ApplyRunIn, DeltasOut, SwitchIn
from outlier_core.tune.applied_run import RunNotFound, run_folder

router = APIRouter(prefix="/model/deltas", tags=["deltas"])

NOTHING_APPLIED = error(409, "no run is applied, or it is merged (reload the model to get the base back)")


@router.get("", response_model=DeltasOut, responses=ERROR_RESPONSES)
async def get_deltas(service: ServiceDep) -> dict:
    """The applied run, if any: which run and method, switched on or off, merged or not."""
    return {"applied": service.deltas()}


@router.post("", response_model=DeltasOut, responses=MODEL_RESPONSES | error(404, "no such run, or no such method in it") | error(409, "a run is applied already"))
async def attach(body: ApplyRunIn, service: ServiceDep, settings: SettingsDep) -> dict:
    """Attach a run's trained deltas to the served model (switched on): it then computes base + deltas."""
    try:
        folder = run_folder(settings.runs_dir, body.run)
        return {"applied": await service.attach(folder, body.method)}
    except RunNotFound as err:
        raise ApiError(404, f"{err.field}: {err.reason}", err.field) from err


@router.patch("", response_model=DeltasOut, responses=MODEL_RESPONSES | NOTHING_APPLIED)
async def switch(body: SwitchIn, service: ServiceDep) -> dict:
    """Off: the model computes its base weights exactly (the deltas stay attached); on: base + deltas."""
    return {"applied": await service.switch(body.enabled)}


@router.post("/merge", response_model=DeltasOut, responses=MODEL_RESPONSES | NOTHING_APPLIED)
async def merge(service: ServiceDep) -> dict:
    """Write base + deltas into the weights for good: the served model stays tuned until it is reloaded."""
    return {"applied": await service.merge()}


@router.delete("", status_code=204, responses=MODEL_RESPONSES | NOTHING_APPLIED)
async def detach(service: ServiceDep) -> None:
    """Take the deltas off: every base weight is back, bit for bit."""
    await service.detach()
