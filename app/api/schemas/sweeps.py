"""Sweeps: a grid of budgets × methods × seeds (× rule settings) on the served model.

A sweep's report is the core's own (`outlier_core.tune.sweep.report.SweepReport`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from app.api.schemas.common import FiniteFloat, Request
from app.api.schemas.task_data import data_choice
from outlier_core.select import RULES
from outlier_core.tune.methods import METHODS
from outlier_core.tune.sweep.report import SweepBrief
from outlier_core.tune.task_data import BUNDLED_TASKS

Method = Literal[METHODS]  # type: ignore[valid-type]
Rule = Literal[RULES]  # type: ignore[valid-type]
SweepData = data_choice(BUNDLED_TASKS, "a bundled task (scored by lm-eval too), or an uploaded task's id (POST /api/task-data: held-out loss only)")
MAX_API_TRIALS = 200  # a sweep started over HTTP; the CLI takes larger grids


class SweepIn(Request):
    budgets: list[Annotated[int, Field(ge=1, le=10**10)]] = Field(min_length=1, max_length=16, description="parameter budgets")
    methods: list[Method] = Field(min_length=1, max_length=len(METHODS))
    seeds: list[Annotated[int, Field(ge=0, le=2**32 - 1)]] = Field(default=[0], min_length=1, max_length=16)
    rules: list[Annotated[list[Rule], Field(min_length=1, max_length=len(RULES))]] = Field(
        default=[list(RULES)], min_length=1, max_length=8, description="rule settings: each the rules that build the mask, in priority order"
    )
    windows: list[Annotated[int, Field(ge=0, le=1000)]] = Field(default=[0], min_length=1, max_length=8, description="layer windows n, crossed with the rule settings")
    steps: int = Field(default=30, ge=1, le=100_000)
    lr: FiniteFloat = Field(default=1e-3, gt=0, description="the sparse methods, SHiRA and LoRA")
    full_lr: FiniteFloat = Field(default=1e-4, gt=0)
    batch_size: int = Field(default=8, ge=1, le=1024)
    held_out: int = Field(default=160, ge=1, le=100_000, description="held-out rows scored for the loss")
    data: SweepData = "outlier_reviews"  # type: ignore[valid-type]
    eval_limit: int | None = Field(default=None, ge=1, le=100_000, description="score each lm-eval task's first items only")


class SweepsOut(BaseModel):
    sweeps: list[SweepBrief]
