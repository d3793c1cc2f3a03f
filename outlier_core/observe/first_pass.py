"""One streamed pass over a tensor on its device: range, mean, central moments, order-key
bucket counts (see `order_stats`) and, for a matrix, the sum of squares of every row and column.

Chunks of `chunk_length` entries stay in cache while a dozen reductions read them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from outlier_core.errors import InputError
from outlier_core.observe.order_stats import (
    BucketCounter,
    Buckets,
    as_key,
    chunk_length,
    key_bits,
    key_dtype,
    scratch,
)


@dataclass(frozen=True)
class FirstPass:
    """What one streamed pass over a tensor gives: range, moments, bucket counts, line sums of squares."""

    count: int
    min: float
    max: float
    mean: float
    moments: tuple[float, float, float]  # central m2, m3, m4
    buckets: Buckets
    row_squares: torch.Tensor | None  # (rows,) float64 on the tensor's device, 2-D tensors only
    column_squares: torch.Tensor | None  # (columns,)


def _moment_shift(flat: torch.Tensor, dtype: torch.dtype) -> float:
    """What the power sums are taken about: 0 when a strided sample's mean is within σ/16 of 0 (a
    matrix, and the squares then serve the line norms too), else that mean rounded to `dtype`,
    so that central moments lose nothing to cancellation."""
    sample = flat[:: max(1, flat.numel() // 4096)].to(torch.float64)
    mean = float(sample.mean())
    return 0.0 if abs(mean) * 16 <= float(sample.std(correction=0)) else float(torch.tensor(mean).to(dtype))


def _exact_sum(part: torch.Tensor) -> torch.Tensor:
    """Sum of a chunk, accumulated in float64 from the first addition: a weight mean of 1e-4
    next to σ 0.2 needs it. numpy casts in SIMD blocks, twice as fast as torch's copy."""
    if part.device.type == "cpu":
        return torch.tensor(np.add.reduce(part.numpy(), dtype=np.float64))
    return part.sum(dtype=torch.float64)


def _column_sums(squares: torch.Tensor) -> torch.Tensor:
    """squares: (rows, columns). Float32 over blocks of 16 rows, float64 across: a float32 sum
    down a thousand rows would drift by 1e-5."""
    whole = squares.shape[0] // 16 * 16
    blocks = squares[:whole].view(-1, 16, squares.shape[1]).sum(dim=1)  # (rows / 16, columns)
    return blocks.sum(dim=0, dtype=torch.float64) + squares[whole:].sum(dim=0, dtype=torch.float64)


def first_pass(flat: torch.Tensor, field: str, line_length: int | None = None) -> FirstPass:
    """One pass over `flat` (n,) on its device, in chunks that stay in cache.

    Sums of x in float64; of (x - s)^2, ^3, ^4 in float32 within a chunk (the square sums
    cascaded, the others by dot products: ~1e-6 relative) and float64 across chunks.
    `line_length`: a 2-D tensor's row length, for the squares of every row and column.
    """
    dtype = key_dtype(flat.dtype)
    n = flat.numel()
    shift = _moment_shift(flat, dtype)
    chunk = chunk_length(flat.device)
    if line_length:
        chunk = max(16, chunk // line_length // 16 * 16) * line_length  # whole rows, by 16
    chunk = min(chunk, n)
    counter = BucketCounter(key_bits(n, dtype), dtype, flat.device, chunk)
    keys = scratch(flat, chunk, dtype) if flat.dtype != dtype else None
    centered_buffer = scratch(flat, chunk, dtype) if shift else None
    squared_buffer = scratch(flat, chunk, dtype)
    ranges, sums, row_squares = [], [], []
    column_squares = torch.zeros(line_length, dtype=torch.float64, device=flat.device) if line_length else None
    for start in range(0, n, chunk):
        part = as_key(flat[start:start + chunk], dtype, keys)  # (L,)
        length = part.numel()
        ranges.append(torch.stack(torch.aminmax(part)))
        centered = torch.sub(part, shift, out=centered_buffer[:length]) if shift else part
        squared = torch.mul(centered, centered, out=squared_buffer[:length])
        sums.append(torch.stack([_exact_sum(part).to(flat.device), squared.sum().double(),
                                 torch.dot(squared, centered).double(), torch.dot(squared, squared).double()]))
        counter.add(part)
        if line_length:
            # (rows in chunk, line_length); the centered buffer is free once the power sums are taken
            squares = (squared if not shift else torch.mul(part, part, out=centered_buffer[:length])).view(-1, line_length)
            row_squares.append(squares.sum(dim=1).double())
            column_squares += _column_sums(squares)
    extremes = torch.stack(ranges)
    low, high = float(extremes[:, 0].min()), float(extremes[:, 1].max())
    total, s2, s3, s4 = torch.stack(sums).sum(dim=0).tolist()
    if not all(math.isfinite(v) for v in (low, high, total, s2, s3, s4)):
        raise InputError(field, "contains NaN or infinite values")
    mean = total / n
    delta = mean - shift  # the power sums are about shift, not the mean
    m2 = max(0.0, s2 / n - delta**2)
    m3 = s3 / n - 3 * delta * s2 / n + 2 * delta**3
    m4 = s4 / n - 4 * delta * s3 / n + 6 * delta**2 * s2 / n - 3 * delta**4
    rows = torch.cat(row_squares) if line_length else None
    return FirstPass(n, low, high, mean, (m2, m3, m4), counter.finish(), rows, column_squares)
