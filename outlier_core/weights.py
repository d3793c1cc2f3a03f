"""Weight statistics and outlier weights: norm scales and projection matrices.

Rules follow BERT Busters (σ from the tensor mean) with robust alternatives, since σ is
inflated by the very outliers it is meant to find.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from outlier_core.detect import require_finite
from outlier_core.errors import InputError


@dataclass(frozen=True)
class WeightRule:
    """Which entries of a tensor are outliers.

    kind "sigma": |w - mean| > k σ (BERT Busters uses 3; σ is inflated by the outliers);
    "percentile": outside the [100-k, k] percentiles (k in (50, 100));
    "mad": |w - median| > k × 1.4826 × MAD (robust σ).
    """

    kind: str = "sigma"
    k: float = 3.0

    def __post_init__(self) -> None:
        if self.kind not in ("sigma", "percentile", "mad"):
            raise InputError("rule", f"unknown rule {self.kind!r}; choose sigma, percentile or mad")
        if not (0 < self.k < float("inf")):
            raise InputError("k", "must be a finite number > 0")
        if self.kind == "percentile" and not (50 < self.k < 100):
            raise InputError("k", "a percentile rule needs 50 < k < 100")


def weight_outlier_mask(w: torch.Tensor, rule: WeightRule = WeightRule()) -> torch.Tensor:
    """w: any shape. Returns a bool tensor of the same shape, True at outlier entries."""
    require_finite(w, "weights")
    flat = w.detach().float().flatten()
    if rule.kind == "sigma":
        outside = (flat - flat.mean()).abs() > rule.k * flat.std()
    elif rule.kind == "mad":
        median = flat.median()
        mad = (flat - median).abs().median()
        outside = (flat - median).abs() > rule.k * 1.4826 * mad
    else:
        q = torch.tensor([1 - rule.k / 100, rule.k / 100], dtype=flat.dtype)
        low, high = torch.quantile(flat, q)
        outside = (flat < low) | (flat > high)
    return outside.reshape(w.shape)
