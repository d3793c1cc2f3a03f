"""Shrink one layer's position × dim matrix to a drawable size without hiding its outliers.

A layer of a large model has thousands of dims; a heatmap needs far fewer columns, and
the outliers are the point, so every reduction keeps extremes rather than averaging them
away. Three views: the `top` dims by peak |x| (the rest pooled into one max column),
`block` max-pooling over consecutive dims, and a `range` of consecutive dims to zoom in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from outlier_core.errors import InputError

VIEWS = ("top", "block", "range")


@dataclass(frozen=True)
class DimView:
    view: str
    values: torch.Tensor  # (T, K) signed
    dims: tuple[int, ...]  # K: the dim each column shows; for "block", the first dim of its block
    block_size: int  # dims per column: 1 except for "block"
    rest_max_abs: torch.Tensor  # (T,): max |x| over the dims not shown (zeros when all are shown)


def _rest_max_abs(values: torch.Tensor, shown: torch.Tensor) -> torch.Tensor:
    """values: (T, D); shown: (K,) dim indices. Per position, max |x| over the other dims: (T,)."""
    hidden = torch.ones(values.shape[1], dtype=torch.bool)
    hidden[shown] = False
    if not hidden.any():
        return torch.zeros(values.shape[0])
    return values[:, hidden].abs().amax(dim=1)


def top_dims(values: torch.Tensor, k: int) -> DimView:
    """The k dims with the largest max |x| over positions, in dim order. values: (T, D)."""
    k = min(k, values.shape[1])
    peak = values.abs().amax(dim=0)  # (D,)
    keep = peak.topk(k).indices.sort().values  # (k,)
    return DimView("top", values[:, keep], tuple(keep.tolist()), 1, _rest_max_abs(values, keep))


def block_max(values: torch.Tensor, n_blocks: int) -> DimView:
    """Consecutive dims pooled into at most n_blocks columns; each cell is its block's entry of
    largest |x|, sign kept. values: (T, D)."""
    n_positions, d = values.shape
    size = math.ceil(d / min(n_blocks, d))
    padded = torch.nn.functional.pad(values, (0, size * math.ceil(d / size) - d))  # (T, B*size), zeros never win
    blocks = padded.reshape(n_positions, -1, size)  # (T, B, size)
    pick = blocks.abs().argmax(dim=-1, keepdim=True)  # (T, B, 1)
    pooled = blocks.gather(-1, pick).squeeze(-1)  # (T, B)
    return DimView("block", pooled, tuple(range(0, d, size)), size, torch.zeros(n_positions))


def dim_range(values: torch.Tensor, start: int, stop: int | None, max_dims: int) -> DimView:
    """Dims start..stop-1 (at most max_dims of them), unpooled. values: (T, D)."""
    d = values.shape[1]
    if not 0 <= start < d:
        raise InputError("dim_start", f"{start} is out of range; the layer has dims 0..{d - 1}")
    stop = d if stop is None else stop
    if stop <= start:
        raise InputError("dim_stop", f"must be greater than dim_start ({start})")
    stop = min(stop, d, start + max_dims)
    shown = torch.arange(start, stop)
    return DimView("range", values[:, start:stop], tuple(shown.tolist()), 1, _rest_max_abs(values, shown))


def columns_for(n_positions: int, max_dims: int, max_cells: int) -> int:
    """How many columns fit: at most max_dims, and at most max_cells cells in all."""
    return max(1, min(max_dims, max_cells // max(n_positions, 1)))


def dim_view(values: torch.Tensor, view: str, max_dims: int, dim_start: int = 0, dim_stop: int | None = None) -> DimView:
    """values: (T, D). Dispatch on the view name."""
    if max_dims < 1:
        raise InputError("max_dims", "must be at least 1")
    if view == "top":
        return top_dims(values, max_dims)
    if view == "block":
        return block_max(values, max_dims)
    if view == "range":
        return dim_range(values, dim_start, dim_stop, max_dims)
    raise InputError("view", f"unknown view {view!r}; choose one of {', '.join(VIEWS)}")
