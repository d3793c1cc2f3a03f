"""Activation interventions as data, turned into TransformerLens hooks inside a context manager.

An `Intervention` is `{layer, site, position, dim, mode, value?}`: `position` and `dim`
are an int, a list of ints, or "all"; `mode` is zero, mean (the reference-corpus mean of
that coordinate, see `reference_means`), scale (multiply by value) or set (to value).
`intervened(...)` checks them against the model and sequence, then registers one hook
per touched hook point through `bridge.hooks(...)`, which removes them on exit, errors
included. Callers that run several passes over checked interventions use `applied(...)`.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Callable, Iterator, Mapping, Sequence

import torch
from pydantic import PlainSerializer

from outlier_core.errors import InputError, within
from outlier_core.load.hooks import check_layer
from outlier_core.load.models import LoadedModel, dtype_name
from outlier_core.load.sites import canonical_site, hook_name, site_width
from outlier_core.load.tokens import Encoded, encode
from outlier_core.observe.capture import AttentionPatterns, attention_patterns_encoded

if TYPE_CHECKING:
    from outlier_core.intervene.reference_means import ReferenceMeans

MODES = ("zero", "mean", "scale", "set")


def _plain(selector: tuple[int, ...] | str) -> int | list[int] | str:
    """JSON writes one index as an int, as a request gives it."""
    return selector if selector == "all" else (selector[0] if len(selector) == 1 else list(selector))


# sorted distinct indices, or "all"
Selector = Annotated[tuple[int, ...] | str, PlainSerializer(_plain, return_type=int | list[int] | str)]


def _selector(value: object, field: str) -> Selector:
    if value == "all":
        return "all"
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise InputError(field, "must be an int, a non-empty list of ints, or 'all'")
    for i in items:
        if isinstance(i, bool) or not isinstance(i, int):
            raise InputError(field, f"must be an int, a list of ints, or 'all'; got {i!r}")
        if i < 0:
            raise InputError(field, f"must be >= 0, got {i}")
    return tuple(sorted(set(items)))


def _count(selector: Selector, size: int) -> int:
    return size if selector == "all" else len(selector)


@dataclass(frozen=True)
class Intervention:
    layer: int
    position: Selector
    dim: Selector
    mode: str = "zero"
    value: float | None = None  # factor for scale, new value for set; unused by zero and mean
    site: str = "resid_post"

    def __post_init__(self) -> None:
        if isinstance(self.layer, bool) or not isinstance(self.layer, int):
            raise InputError("layer", f"must be an int, got {self.layer!r}")
        object.__setattr__(self, "site", canonical_site(self.site))
        object.__setattr__(self, "position", _selector(self.position, "position"))
        object.__setattr__(self, "dim", _selector(self.dim, "dim"))
        if self.mode not in MODES:
            raise InputError("mode", f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.value is not None and (isinstance(self.value, bool) or not isinstance(self.value, (int, float)) or not math.isfinite(self.value)):
            raise InputError("value", "must be a finite number")
        if self.mode in ("zero", "mean"):
            object.__setattr__(self, "value", None)  # a stale value from a form is harmless: drop it
        elif self.value is None:
            raise InputError("value", f"mode {self.mode} needs a value")

    def check(self, model: LoadedModel, seq_len: int) -> None:
        """Raise InputError unless every coordinate exists in this model and sequence and the value fits its dtype."""
        check_layer(model, self.layer)
        self.check_positions(seq_len)
        width = site_width(model, self.site)
        if self.dim != "all" and self.dim[-1] >= width:
            raise InputError("dim", f"{self.dim[-1]} is out of range; {self.site} has dims 0..{width - 1}")
        check_fits(self.value, model.dtype)

    def check_positions(self, seq_len: int) -> None:
        if self.position != "all" and self.position[-1] >= seq_len:
            raise InputError("position", f"{self.position[-1]} is past the end of the {seq_len}-token sequence")

    def size(self, seq_len: int, width: int) -> int:
        """How many scalars this intervention touches."""
        return _count(self.position, seq_len) * _count(self.dim, width)

    @classmethod
    def from_json(cls, data: Mapping) -> "Intervention":
        if not isinstance(data, Mapping):
            raise InputError("interventions", "each intervention must be an object")
        missing = [k for k in ("layer", "position", "dim") if k not in data]
        if missing:
            raise InputError(missing[0], "is required")
        return cls(data["layer"], data["position"], data["dim"], data.get("mode", "zero"), data.get("value"),
                   data.get("site", "resid_post"))


def check_fits(value: float | None, dtype: torch.dtype) -> None:
    """A value the dtype cannot hold would overflow inside the forward pass."""
    largest = torch.finfo(dtype).max
    if value is not None and abs(value) > largest:
        raise InputError("value", f"{value:g} does not fit the model's {dtype_name(dtype)} (max {largest:g})")


def check_interventions(model: LoadedModel, interventions: Sequence[Intervention], seq_len: int) -> None:
    """Each intervention against the model and a `seq_len`-token sequence; a refusal names `interventions[i].<field>`."""
    for i, iv in enumerate(interventions):
        with within(f"interventions[{i}]"):
            iv.check(model, seq_len)


def check_means(interventions: Sequence[Intervention], means: Mapping[str, "ReferenceMeans"]) -> None:
    """Mean mode replaces by the reference means of its site: the caller must have them."""
    for iv in interventions:
        if iv.mode == "mean" and iv.site not in means:
            raise InputError("mode", f"mean needs reference means for site {iv.site}")


def _indices(selector: Selector, size: int, device: torch.device) -> torch.Tensor:
    if selector == "all":
        return torch.arange(size, device=device)
    return torch.tensor(selector, device=device)


def _hook(edits: list[tuple[torch.Tensor | None, Intervention]], means: Mapping[str, "ReferenceMeans"]) -> Callable:
    """One hook for all the edits at one hook point; `rows` None means every batch row."""

    def hook(h: torch.Tensor, *, hook) -> torch.Tensor:  # h: (B, T, W)
        out = h.clone()
        magnitude = h.abs().float()  # (B, T, W), before any edit at this point
        for rows, iv in edits:
            rows = torch.arange(h.shape[0], device=h.device) if rows is None else rows.to(h.device)
            index = (rows[:, None, None], _indices(iv.position, h.shape[1], h.device)[None, :, None],
                     _indices(iv.dim, h.shape[2], h.device)[None, None, :])  # broadcasts to (R, P, Dn)
            if iv.mode == "zero":
                out[index] = 0
            elif iv.mode == "set":
                out[index] = iv.value
            elif iv.mode == "scale":
                out[index] = h[index] * iv.value
            else:
                out[index] = _mean_values(magnitude, index, iv, means[iv.site]).to(out.dtype)
        return out

    return hook


def _mean_values(magnitude: torch.Tensor, index: tuple, iv: Intervention, means: "ReferenceMeans") -> torch.Tensor:
    """Carrier mean where the entry is massive in this row (as Sun et al. do), else the ordinary mean."""
    rule = means.rule
    median = magnitude.flatten(1).median(dim=1).values  # (B,)
    threshold = (rule.median_ratio * median).clamp(min=rule.abs_threshold)  # (B,)
    rows, _, dims = index
    massive = magnitude[index] > threshold[rows]  # (R, P, Dn)
    device = magnitude.device
    carrier = means.carrier_mean[iv.layer].to(device)[dims]  # (1, 1, Dn)
    has_carrier = means.carrier_count[iv.layer].to(device)[dims] > 0
    ordinary = means.ordinary_mean[iv.layer].to(device)[dims]
    return torch.where(massive & has_carrier, carrier, ordinary)  # (R, P, Dn)


def hooks_for(arms: Sequence[Sequence[Intervention]], means: Mapping[str, "ReferenceMeans"]) -> list[tuple[str, Callable]]:
    """Hooks for checked interventions: with one arm it applies to every batch row, else arm i to row i."""
    by_point: dict[str, list[tuple[torch.Tensor | None, Intervention]]] = {}
    for row, arm in enumerate(arms):
        for iv in arm:
            rows = None if len(arms) == 1 else torch.tensor([row])
            by_point.setdefault(hook_name(iv.site, iv.layer), []).append((rows, iv))
    return [(name, _hook(edits, means)) for name, edits in by_point.items()]


@contextmanager
def applied(
    model: LoadedModel,
    arms: Sequence[Sequence[Intervention]],
    means: Mapping[str, "ReferenceMeans"] | None = None,
) -> Iterator[None]:
    """Forward passes inside the block run with checked interventions: batch row i with `arms[i]`,
    or every row with the one arm, so several experiments can share one pass."""
    with model.bridge.hooks(fwd_hooks=hooks_for(arms, means or {})):
        yield


@contextmanager
def intervened(
    model: LoadedModel,
    interventions: Sequence[Intervention],
    seq_len: int,
    means: Mapping[str, "ReferenceMeans"] | None = None,
) -> Iterator[None]:
    """Every forward pass inside the block runs with `interventions` applied (checked first)."""
    check_interventions(model, interventions, seq_len)
    check_means(interventions, means or {})
    with applied(model, [interventions], means):
        yield


def attention_patterns_under(
    model: LoadedModel,
    text: str,
    layer: int,
    interventions: Sequence[Intervention],
    means: Mapping[str, ReferenceMeans] | None = None,
    prepend_bos: bool = True,
    max_tokens: int | None = None,
) -> AttentionPatterns:
    """One layer's patterns with `interventions` applied on the way (`means` for mean mode)."""
    return attention_patterns_under_encoded(model, encode(model, text, prepend_bos, max_tokens), layer, interventions, means)


def attention_patterns_under_encoded(
    model: LoadedModel,
    encoded: Encoded,
    layer: int,
    interventions: Sequence[Intervention],
    means: Mapping[str, ReferenceMeans] | None = None,
    max_blocks: int | None = None,
) -> AttentionPatterns:
    """`attention_patterns_under` on an encoded prompt: the interventions are checked against it here.

    `max_blocks`: pooled as `attention_patterns_encoded` pools.
    """
    check_layer(model, layer)  # before the interventions: a bad layer is the first thing to name
    check_interventions(model, interventions, encoded.ids.shape[1])
    check_means(interventions, means or {})
    return attention_patterns_encoded(model, encoded, layer, hooks_for([interventions], means or {}), max_blocks)
