"""Outlier rules as pure functions on tensors. Every threshold is a parameter.

Defaults come from the papers (see RESEARCH.md): massive activations by Sun et al. 2024,
outlier features by LLM.int8. Outlier weights live in `weights.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from outlier_core.errors import InputError


def require_finite(x: torch.Tensor, field: str) -> None:
    if not torch.isfinite(x).all():
        raise InputError(field, "contains NaN or infinite values")


@dataclass(frozen=True)
class MassiveRule:
    """|x| > abs_threshold and |x| > median_ratio × median(|x| over the layer)."""

    abs_threshold: float = 100.0
    median_ratio: float = 1000.0

    def __post_init__(self) -> None:
        if not (self.abs_threshold >= 0 and self.abs_threshold < float("inf")):
            raise InputError("abs_threshold", "must be a finite number >= 0")
        if not (self.median_ratio > 0 and self.median_ratio < float("inf")):
            raise InputError("median_ratio", "must be a finite number > 0")


PAPER_RULE = MassiveRule()
# Small models have smaller magnitudes: drop the absolute floor and keep a ratio only.
# On SmolLM2-135M this also catches the early phase (layers 1-8, |x| ~ 770, ~800x the median).
RELATIVE_RULE = MassiveRule(abs_threshold=0.0, median_ratio=300.0)


def massive_threshold(median_abs: float, rule: MassiveRule) -> float:
    return max(rule.abs_threshold, rule.median_ratio * median_abs)


def massive_mask(magnitude: torch.Tensor, median_abs: float, rule: MassiveRule) -> torch.Tensor:
    """magnitude: |h|, (T, D); median_abs: its median. Returns bool (T, D)."""
    return magnitude > massive_threshold(median_abs, rule)


def massive_entries(h: torch.Tensor, rule: MassiveRule = PAPER_RULE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Massive activations of one layer's hidden state.

    h: (T, D). Returns (positions (N,), dims (N,), signed values (N,)), sorted by |value| descending.
    """
    require_finite(h, "activations")
    magnitude = h.abs().float()  # (T, D); in fp32, so a bf16 hidden state's threshold is not rounded to bf16
    positions, dims = torch.nonzero(massive_mask(magnitude, float(magnitude.median()), rule), as_tuple=True)  # (N,), (N,)
    values = h[positions, dims]
    order = values.abs().argsort(descending=True)
    return positions[order], dims[order], values[order]


@dataclass(frozen=True)
class FeatureRule:
    """LLM.int8 outlier features: |x| >= magnitude in >= layer_share of layers and >= position_share of positions."""

    magnitude: float = 6.0
    layer_share: float = 0.25
    position_share: float = 0.06


INT8_RULE = FeatureRule()


@dataclass(frozen=True)
class OutlierFeature:
    dim: int
    layer_share: float  # share of layers where the dim reaches the magnitude at some position
    position_share: float  # share of positions where it does so in at least one layer
    max_abs: float


def outlier_features(x: torch.Tensor, rule: FeatureRule = INT8_RULE) -> list[OutlierFeature]:
    """Outlier feature dims across layers.

    x: (L, T, D), the inputs of the projections at every layer for one sequence.
    """
    require_finite(x, "activations")
    hits = x.abs() >= rule.magnitude  # (L, T, D)
    layer_share = hits.any(dim=1).float().mean(dim=0)  # (D,)
    position_share = hits.any(dim=0).float().mean(dim=0)  # (D,)
    max_abs = x.abs().amax(dim=(0, 1))  # (D,)
    chosen = (layer_share >= rule.layer_share) & (position_share >= rule.position_share)
    features = [
        OutlierFeature(int(d), float(layer_share[d]), float(position_share[d]), float(max_abs[d]))
        for d in torch.nonzero(chosen).flatten()
    ]
    return sorted(features, key=lambda f: -f.max_abs)
