"""A fine-tune run's deltas on the served model: attach, switch, merge, detach."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.api.schemas.common import Request
from outlier_core.tune.applied_run import RUN_ID, AppliedState
from outlier_core.tune.methods import METHODS

Method = Literal[METHODS]  # type: ignore[valid-type]


class ApplyRunIn(Request):
    run: str = Field(pattern=f"^{RUN_ID.pattern}$", description="a run id from GET /api/runs (the folder's name under the runs directory)")
    method: Method = Field(default="mask", description="which of the run's methods: mask, random, ln, lora or full")


class SwitchIn(Request):
    enabled: bool = Field(description="false: the model computes the base weights exactly; true: base + deltas")


AppliedRunOut = AppliedState  # the core's record of an applied run is the response shape


class DeltasOut(BaseModel):
    applied: AppliedRunOut | None = Field(description="the run whose deltas the served model carries; null when it serves its base weights")
