"""Temporary weight interventions: zero, scale or set an entry, row or column of a parameter.

A `WeightEdit` names a parameter by its Hugging Face name and an index with one entry per
axis, each an int or "all": `(507, 1487)` is one entry of a matrix, `(507, "all")` its
row 507, `("all", 1487)` its column 1487, `(12,)` one entry of a norm weight. Inside
`edited_weights(...)` the entries hold the new values; on exit the saved originals are
copied back, so the parameter is bit-identical afterwards, errors included. Callers that
edit several times with the same checked edits resolve them once and use `edited(...)`.
"""

from __future__ import annotations

import math
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from outlier_core.errors import InputError, within
from outlier_core.intervene.interventions import check_fits
from outlier_core.load.model_cache import bypassed
from outlier_core.load.models import LoadedModel

WEIGHT_MODES = ("zero", "scale", "set")
AxisIndex = int | str  # an index along one axis, or "all"


@dataclass(frozen=True)
class WeightEdit:
    parameter: str  # plain HF name, e.g. model.layers.11.mlp.down_proj.weight
    index: tuple[AxisIndex, ...]  # one entry per axis of the parameter
    mode: str = "zero"
    value: float | None = None  # factor for scale, new value for set

    def __post_init__(self) -> None:
        if not isinstance(self.parameter, str) or not self.parameter:
            raise InputError("parameter", "must be a parameter name")
        index = tuple(self.index) if isinstance(self.index, (list, tuple)) else (self.index,)
        for i in index:
            if i != "all" and (isinstance(i, bool) or not isinstance(i, int)):
                raise InputError("index", f"each index must be an int or 'all', got {i!r}")
        object.__setattr__(self, "index", index)
        if self.mode not in WEIGHT_MODES:
            hint = "mean applies to activations only" if self.mode == "mean" else f"unknown mode {self.mode!r}"
            raise InputError("mode", f"{hint}; a weight edit takes {', '.join(WEIGHT_MODES)}")
        if self.value is not None and (isinstance(self.value, bool) or not isinstance(self.value, (int, float)) or not math.isfinite(self.value)):
            raise InputError("value", "must be a finite number")
        if self.mode == "zero":
            object.__setattr__(self, "value", None)
        elif self.value is None:
            raise InputError("value", f"mode {self.mode} needs a value")

    @property
    def selector(self) -> tuple[slice | int, ...]:
        return tuple(slice(None) if i == "all" else i for i in self.index)

    @classmethod
    def from_json(cls, data: dict) -> "WeightEdit":
        if not isinstance(data, dict):
            raise InputError("weight_edits", "each weight edit must be an object")
        return cls(data.get("parameter"), data.get("index", ()), data.get("mode", "zero"), data.get("value"))


Target = tuple[torch.nn.Parameter, WeightEdit]  # a checked edit and the parameter it names


def resolve_parameter(model: LoadedModel, edit: WeightEdit) -> torch.nn.Parameter:
    """The parameter an edit names, after checking its name, index and value against the model."""
    params = model.hf_parameters()
    if edit.parameter not in params:
        raise InputError("parameter", f"no parameter named {edit.parameter!r}; names look like {next(iter(params))!r}")
    p = params[edit.parameter]
    if len(edit.index) != p.ndim:
        raise InputError("index", f"{edit.parameter} has {p.ndim} axes {tuple(p.shape)}; give {p.ndim} indices, got {len(edit.index)}")
    for axis, (i, size) in enumerate(zip(edit.index, p.shape)):
        if i != "all" and not 0 <= i < size:
            raise InputError("index", f"{i} on axis {axis} of {edit.parameter} is out of range 0..{size - 1}")
    check_fits(edit.value, p.dtype)
    return p


def resolve_edits(model: LoadedModel, edits: Sequence[WeightEdit]) -> list[Target]:
    """Each edit with its parameter; a refusal names the entry, `weights[i].<field>`, as the API and CLI call them."""
    targets = []
    for i, edit in enumerate(edits):
        with within(f"weights[{i}]"):
            targets.append((resolve_parameter(model, edit), edit))
    return targets


def _new_value(original: torch.Tensor, edit: WeightEdit) -> torch.Tensor:
    if edit.mode == "zero":
        return torch.zeros_like(original)
    if edit.mode == "scale":
        return original * edit.value
    return torch.full_like(original, edit.value)


@contextmanager
def edited_weights(model: LoadedModel, edits: Sequence[WeightEdit]) -> Iterator[None]:
    """Apply `edits` in order for the duration of the block; restore bit for bit on exit."""
    targets = [(resolve_parameter(model, e), e) for e in edits]  # validate all before touching any
    with edited(model, targets):
        yield


@contextmanager
def edited(model: LoadedModel, targets: Sequence[Target]) -> Iterator[None]:
    """`edited_weights` for edits already resolved against `model`."""
    saved: list[tuple[torch.Tensor, tuple, torch.Tensor]] = []
    with bypassed(model), ExitStack() as stores:
        try:
            # The parameter's `.data` (an offloaded layer's: its loader's copy): writes there leave the
            # version counter alone, the weights are only borrowed, and caches keyed by that
            # counter stay valid once they are restored.
            for p, edit in targets:
                values = stores.enter_context(model.writable_values(edit.parameter, p))
                original = values[edit.selector].clone()
                saved.append((values, edit.selector, original))
                values[edit.selector] = _new_value(original, edit).to(values.device)
            yield
        finally:
            for values, selector, original in reversed(saved):  # reversed: overlapping edits unwind correctly
                values[selector] = original
