"""Tensors to JSON lists, rounded so that large matrices stay small on the wire.

Rounding happens in float64: the rounded value is then the double nearest its decimal
form, so it prints short (0.01234, not 0.012340000085532665).
"""

from __future__ import annotations

import torch


def significant(values: torch.Tensor, digits: int = 4) -> list:
    """Round to `digits` significant digits. Any shape; zeros and non-finite values pass through."""
    x = values.detach().double().cpu()
    magnitude = x.abs()
    exponent = torch.where(magnitude > 0, magnitude.log10().floor(), torch.zeros_like(x))
    exponent = torch.nan_to_num(exponent, nan=0.0, posinf=0.0, neginf=0.0)
    shift = digits - 1 - exponent  # decimal places to keep
    up = torch.pow(10.0, shift.clamp(min=0))  # exact powers of ten for both branches
    down = torch.pow(10.0, (-shift).clamp(min=0))
    rounded = torch.where(shift >= 0, torch.round(x * up) / up, torch.round(x / down) * down)
    return torch.where(torch.isfinite(x), rounded, x).tolist()


def decimals(values: torch.Tensor, places: int = 4) -> list:
    """Round to `places` decimal places (for values in [0, 1], such as attention)."""
    scale = 10.0**places
    return (torch.round(values.detach().double().cpu() * scale) / scale).tolist()
