"""A fine-tune run's deltas on the served model: attach, switch, merge, detach."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.api.schemas.common import Request
from outlier_core.tune.applied_run import RUN_ID
from outlier_core.tune.finetune import METHODS

Method = Literal[METHODS]  # type: ignore[valid-type]


class ApplyRunIn(Request):
    run: str = Field(pattern=f"^{RUN_ID.pattern}$", description="a run id from GET /api/runs (the folder's name under the runs directory)")
    method: Method = Field(default="mask", description="which of the run's methods: mask, random, ln, lora or full")


class SwitchIn(Request):
    enabled: bool = Field(description="false: the model computes the base weights exactly; true: base + deltas")


class AppliedRunOut(BaseModel):
    run: str = Field(description="the run id")
    method: str
    name: str = Field(description="the run's own name: the mask's name, random, ln_only, lora_rN or full")
    model: str
    trainable: int = Field(description="values the run trained: its deltas")
    enabled: bool = Field(description="whether the model computes base + deltas now")
    merged: bool = Field(description="true once merged: the weights are base + deltas until the model is reloaded")
    serving: str = Field(description="what the served model computes, in words")


class DeltasOut(BaseModel):
    applied: AppliedRunOut | None = Field(description="the run whose deltas the served model carries; null when it serves its base weights")
