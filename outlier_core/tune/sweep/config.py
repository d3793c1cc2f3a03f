"""A sweep's grid and the trials it expands to.

A trial is one method at one budget, one seed and one mask-rule setting: one `RunConfig`
whose mask is a recipe (`mask_recipe.MaskRecipe`, built inside the run) and whose only
method is the trial's. Its key is a hash of that config, so the same trial in two sweeps
of one store is trained once, and a sweep is known by the hash of its own config: running
the same grid again finds the same sweep and its finished trials.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from itertools import product

from pydantic import ConfigDict, TypeAdapter, ValidationError

from outlier_core.contract import to_json
from outlier_core.errors import InputError
from outlier_core.select import RULES
from outlier_core.tune.mask_recipe import MaskRecipe, setting_label
from outlier_core.tune.methods import METHODS
from outlier_core.tune.run_config import RunConfig
from outlier_core.tune.task_data import DEFAULT_TASK
from outlier_core.tune.train_data import TrainConfig

MAX_TRIALS = 2000  # a grid beyond this is a typo, not an experiment


@dataclass(frozen=True)
class RuleSetting:
    rules: tuple[str, ...] = RULES  # which rules build the mask, in priority order
    window: int = 0  # the layer window n around the strongest norm outlier; 0: every layer

    @property
    def label(self) -> str:
        return setting_label(self.rules, self.window)


@dataclass(frozen=True)
class SweepConfig:
    model: str
    budgets: tuple[int, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    settings: tuple[RuleSetting, ...] = (RuleSetting(),)
    train: TrainConfig = field(default_factory=TrainConfig)  # its seed is each trial's own
    data: str | None = DEFAULT_TASK  # what `RunConfig.data` takes; by default the bundled task
    eval_tasks: tuple[str, ...] = (DEFAULT_TASK,)  # lm-eval tasks scored after each trial
    eval_limit: int | None = None
    device: str | None = None
    dtype: str | None = None

    __pydantic_config__ = ConfigDict(json_schema_serialization_defaults_required=True)

    def __post_init__(self) -> None:
        for name, values in (("budgets", self.budgets), ("methods", self.methods), ("seeds", self.seeds), ("settings", self.settings)):
            if not values or len(set(values)) != len(values):
                raise InputError(name, "must list at least one value, each once")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise InputError("methods", f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
        if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in self.budgets):
            raise InputError("budgets", "must be whole numbers of parameters >= 1")
        if any(isinstance(s, bool) or not isinstance(s, int) for s in self.seeds):
            raise InputError("seeds", "must be whole numbers")
        n = len(self.budgets) * len(self.methods) * len(self.seeds) * len(self.settings)
        if n > MAX_TRIALS:
            raise InputError("budgets", f"the grid has {n:,} trials; a sweep takes at most {MAX_TRIALS:,}")


@dataclass(frozen=True)
class Trial:
    method: str
    budget: int
    seed: int
    setting: str  # the rule setting's label
    config: RunConfig  # replays the trial

    @property
    def key(self) -> str:
        return _digest(to_json(self.config))

    @property
    def folder_name(self) -> str:
        return f"{self.method}-b{self.budget}-s{self.seed}-{self.key[:10]}"


def plan_trials(sweep: SweepConfig) -> list[Trial]:
    """Every trial, setting by setting, budget by budget, seed by seed, each method in turn:
    the methods of one seed finish together, so a half-done sweep already compares them."""
    trials = []
    for index, (setting, budget, seed, method) in enumerate(product(sweep.settings, sweep.budgets, sweep.seeds, sweep.methods)):
        recipe = MaskRecipe(budget, setting.rules, setting.window)
        config = RunConfig(
            model=sweep.model, recipe=recipe, methods=(method,), train=replace(sweep.train, seed=seed), data=sweep.data,
            device=sweep.device, dtype=sweep.dtype, eval_tasks=sweep.eval_tasks, eval_limit=sweep.eval_limit,
            eval_base=index == 0,  # the base model scores the same in every trial: once is enough
        )
        trials.append(Trial(method, budget, seed, setting.label, config))
    return trials


def sweep_id(sweep: SweepConfig) -> str:
    return "sweep-" + _digest(to_json(sweep))[:12]


def sweep_json(sweep: SweepConfig) -> str:
    return json.dumps(to_json(sweep), sort_keys=True)


def read_sweep(text: str | bytes, field_name: str = "config") -> SweepConfig:
    try:
        return TypeAdapter(SweepConfig).validate_json(text)
    except ValidationError as err:
        first = err.errors()[0]
        raise InputError(field_name, f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from err


def _digest(payload: object) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
