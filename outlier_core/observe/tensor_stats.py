"""Statistics and outlier rules of one weight tensor: summary, percentiles, histogram, outliers.

Rules follow BERT Busters (σ from the tensor mean) with robust alternatives, since σ is
inflated by the very outliers it is meant to find.

Computed with torch on the tensor's device in two streamed passes, linear in its size (no
sort of the tensor; `order_stats` says how): results come back to the CPU small. A tensor
of at most `order_stats.SMALL` entries is sorted whole on the CPU instead, after the same
first pass: the same answers, without the planning over buckets that costs more at that size.

- Exact: count, min, max, mean (summed in float64), every percentile and the median
  (numpy's linear interpolation), the MAD, the histogram counts (numpy's float64 edges,
  numpy's bins), the outlier count under every rule and the listed outliers.
- To float rounding: σ and the row/column norms (float32 squares summed in float32 within a
  chunk, float64 across: ~1e-7 relative); skewness, kurtosis and bimodality (power sums by
  float32 dot products per chunk of 2**20 entries: ~1e-6 relative).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
from pydantic import Field, PlainSerializer

from outlier_core.errors import InputError
from outlier_core.observe.first_pass import FirstPass, first_pass
from outlier_core.observe.order_stats import (
    DeviationPlan,
    Gathered,
    ceil_to,
    chunk_length,
    deviations_at,
    floor_to,
    gather,
    mark_between,
    plan_deviations,
)

PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
DEFAULT_BINS = 64
DEFAULT_LISTED = 32  # outlier entries listed per tensor; the count always covers all of them
MAD_TO_SIGMA = 1.4826  # σ of a normal distribution per unit of median absolute deviation
DEFAULT_K = {"sigma": 3.0, "percentile": 99.0, "mad": 3.0}  # per rule kind: BERT Busters' 3σ; the 1st/99th percentiles


@dataclass(frozen=True)
class WeightRule:
    """Which entries of a tensor are outliers.

    kind "sigma": |w - mean| > k σ, σ the population standard deviation (BERT Busters uses 3;
    σ is inflated by the outliers); "percentile": below the (100-k)th or above the kth
    percentile (k in (50, 100)); "mad": |w - median| > k × 1.4826 × MAD (robust σ).
    A value exactly on a bound is not an outlier.
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


# (q, value) pairs, numpy's default linear interpolation; JSON keys them by q
Percentiles = Annotated[
    tuple[tuple[int, float], ...],
    PlainSerializer(lambda pairs: {str(q): v for q, v in pairs}, return_type=dict[str, float]),
]


@dataclass(frozen=True)
class Summary:
    count: int
    min: float
    max: float
    mean: float
    std: float  # population σ (ddof 0): a tensor is the whole population, not a sample of one
    median: float
    mad: Annotated[float, Field(description="median |w - median|, unscaled")]
    percentiles: Percentiles


@dataclass(frozen=True)
class Histogram:
    """Equal-width bins from min to max; bin i holds edges[i] <= x < edges[i+1], the last one also x == max."""

    edges: tuple[float, ...]  # (bins + 1,)
    counts: tuple[int, ...]  # (bins,)


@dataclass(frozen=True)
class Outlier:
    index: tuple[int, ...]  # into the tensor, in its HF layout
    value: float


@dataclass(frozen=True)
class OutlierSet:
    """Entries strictly outside [low, high] under `rule`; the farthest outside are listed first."""

    rule: WeightRule
    low: float
    high: float
    count: int
    listed: Annotated[tuple[Outlier, ...], Field(description="the farthest outside the bounds first")]  # at most max_listed of the `count`


@dataclass(frozen=True)
class LineNorms:
    """L2 norms of a matrix's rows or columns, and the rows/columns the rule flags among them."""

    axis: str  # "row" (HF [out, in]: one output unit) or "column" (one input dim)
    summary: Summary
    outliers: Annotated[OutlierSet, Field(description="rows or columns whose L2 norm the rule flags; index is (row,) or (column,)")]


@dataclass(frozen=True)
class TensorStats:
    shape: tuple[int, ...]
    summary: Summary
    skewness: float | None  # sample-corrected G1; None when σ = 0 or fewer than 4 entries
    excess_kurtosis: float | None  # sample-corrected G2
    # Sarle's coefficient (G1² + 1) / (G2 + 3(n-1)²/((n-2)(n-3)))
    bimodality: Annotated[float | None, Field(description="Sarle's coefficient; above 5/9 hints at two modes")]
    histogram: Annotated[Histogram | None, Field(description="left out (null) where every tensor is listed")]
    outliers: OutlierSet
    rows: LineNorms | None  # 2-D tensors only
    columns: LineNorms | None


def _flat(w: torch.Tensor, field: str) -> torch.Tensor:
    if w.numel() == 0:
        raise InputError(field, "is empty")
    return w.detach().reshape(-1)


def _percentile_ranks(qs: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """numpy's linear interpolation: the q-th percentile lies between ranks lower and upper, `fraction` of the way."""
    position = np.asarray(qs, dtype=np.float64) / 100 * (n - 1)
    lower = np.floor(position).astype(np.int64)
    return lower, np.minimum(lower + 1, n - 1), position - lower


def _percentiles(order_stats: Callable[[np.ndarray], np.ndarray], n: int, qs: tuple[float, ...]) -> tuple[float, ...]:
    """order_stats: 0-based ranks (k,) -> their values (k,) float64 in ascending order."""
    lower, upper, fraction = _percentile_ranks(qs, n)
    low_values, high_values = order_stats(lower), order_stats(upper)
    return tuple(float(v) for v in low_values + (high_values - low_values) * fraction)


def _median_deviation_ranks(n: int) -> np.ndarray:
    return np.array([n // 2] if n % 2 else [n // 2 - 1, n // 2])


@dataclass(frozen=True)
class _Plan:
    """Which buckets pass 2 gathers, and the deviation bracket the MAD is read through."""

    wanted: np.ndarray  # (2**bits,) bool by position
    deviations: DeviationPlan
    edges: np.ndarray | None  # (bins + 1,) float64


def _histogram_edges(first: FirstPass, bins: int) -> np.ndarray:
    low, high = first.min, first.max
    if low == high:  # numpy's convention for a constant tensor
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, bins + 1)  # (bins + 1,) float64


def _plan(first: FirstPass, rule: WeightRule, bins: int | None, max_listed: int) -> _Plan:
    """Every bucket whose entries some answer needs: ranks, thresholds, deviations, extremes."""
    buckets, n = first.buckets, first.count
    bounds = (100 - rule.k, rule.k) if rule.kind == "percentile" else ()  # k is a percentile only under that rule
    lower, upper, _ = _percentile_ranks((*PERCENTILES, *bounds), n)
    median_lower, median_upper, _ = _percentile_ranks((50,), n)
    center_low = buckets.value_ranges(buckets.rank_positions(median_lower))[0][0]  # the median lies in [center_low, center_high]
    center_high = buckets.value_ranges(buckets.rank_positions(median_upper))[1][0]
    deviations = plan_deviations(buckets, float(center_low), float(center_high), _median_deviation_ranks(n))
    wanted = deviations.wanted.copy()
    wanted[buckets.rank_positions(np.concatenate([lower, upper]))] = True

    def between(low: float, high: float) -> None:
        mark_between(wanted, buckets, low, high, first.min, first.max)

    edges = _histogram_edges(first, bins) if bins else None
    if edges is not None:
        inner = edges[1:-1][(edges[1:-1] > first.min) & (edges[1:-1] <= first.max)]
        wanted[buckets.positions_of(ceil_to(inner, buckets.dtype))] = True
    if rule.kind == "sigma":
        half = rule.k * math.sqrt(first.moments[0])
        between(first.mean - half, first.mean - half)
        between(first.mean + half, first.mean + half)
    elif rule.kind == "mad":  # the bounds median ± k·1.4826·MAD are not known yet: their whole possible ranges
        scale = rule.k * MAD_TO_SIGMA
        widen = 1e-9 * (abs(center_high) + abs(center_low) + scale * deviations.high)
        between(center_low - scale * deviations.high - widen, center_high - scale * deviations.low + widen)
        between(center_low + scale * deviations.low - widen, center_high + scale * deviations.high + widen)
    if max_listed:  # the farthest outliers are among the max_listed least and greatest entries
        least, greatest = buckets.rank_positions(np.array([min(max_listed, n) - 1, max(0, n - max_listed)]))
        wanted[:least + 1] = True
        wanted[greatest:] = True
    return _Plan(wanted, deviations, edges)


def _summary(first: FirstPass, percentiles: tuple[float, ...], mad: Callable[[float], float]) -> Summary:
    """percentiles: at (50, *PERCENTILES); mad: the median -> the MAD about it."""
    median, *others = percentiles
    return Summary(
        count=first.count,
        min=first.min,
        max=first.max,
        mean=first.mean,
        std=math.sqrt(first.moments[0]),
        median=median,
        mad=mad(median),
        percentiles=tuple(zip(PERCENTILES, others)),
    )


def _gathered_summary(first: FirstPass, gathered: Gathered, plan: _Plan) -> Summary:
    percentiles = _percentiles(gathered.order_stats, first.count, (50, *PERCENTILES))
    return _summary(first, percentiles, lambda median: float(deviations_at(gathered, plan.deviations, median).mean()))


def _shape_measures(n: int, m2: float, m3: float, m4: float) -> tuple[float | None, float | None, float | None]:
    """Sample-corrected skewness G1, excess kurtosis G2 and Sarle's bimodality coefficient."""
    if n < 4 or m2 <= 0:
        return None, None, None
    g1 = m3 / m2**1.5
    g2 = m4 / m2**2 - 3
    skewness = g1 * math.sqrt(n * (n - 1)) / (n - 2)
    excess_kurtosis = (n - 1) / ((n - 2) * (n - 3)) * ((n + 1) * g2 + 6)
    bimodality = (skewness**2 + 1) / (excess_kurtosis + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3)))
    return skewness, excess_kurtosis, bimodality


def _bounds(summary: Summary, percentiles: Callable[[tuple[float, ...]], tuple[float, ...]], rule: WeightRule) -> tuple[float, float]:
    if rule.kind == "sigma":
        half = rule.k * summary.std
        return summary.mean - half, summary.mean + half
    if rule.kind == "mad":
        half = rule.k * MAD_TO_SIGMA * summary.mad
        return summary.median - half, summary.median + half
    return percentiles((100 - rule.k, rule.k))


def _outlier_set(entries: tuple[np.ndarray, np.ndarray], count: int, shape: tuple[int, ...], low: float, high: float,
                 rule: WeightRule, max_listed: int) -> OutlierSet:
    """entries: (values (g,) float64, flat indices (g,)), among them every entry outside [low, high]."""
    entry_value, entry_index = entries
    outside = (entry_value < low) | (entry_value > high)  # exact: float64 against float64
    values, index = entry_value[outside], entry_index[outside]
    beyond = np.maximum(low - values, values - high)  # how far outside the bounds
    order = np.lexsort((index, -beyond))[:max_listed]  # farthest first, then by flat index
    coordinates = np.stack(np.unravel_index(index[order], shape), axis=1).tolist()  # (listed, ndim)
    listed = tuple(Outlier(tuple(c), v) for c, v in zip(coordinates, values[order].tolist()))
    return OutlierSet(rule, low, high, count, listed)


def _histogram(edges: np.ndarray, count_below: Callable[[np.ndarray], np.ndarray], n: int) -> Histogram:
    """count_below: bounds (k,) -> entries strictly below each, exactly."""
    below = np.concatenate([[0], count_below(edges[1:-1]), [n]])  # the last bin is closed
    return Histogram(tuple(float(e) for e in edges), tuple(int(c) for c in np.diff(below)))


def _bucketed_distribution(flat: torch.Tensor, first: FirstPass, shape: tuple[int, ...], rule: WeightRule, bins: int | None, max_listed: int):
    """Pass 2 and what it answers: (summary, histogram or None, outliers)."""
    plan = _plan(first, rule, bins, max_listed)
    gathered = gather(flat, first.buckets, plan.wanted, first.min, first.max)
    summary = _gathered_summary(first, gathered, plan)
    low, high = _bounds(summary, lambda qs: _percentiles(gathered.order_stats, first.count, qs), rule)
    histogram = _histogram(plan.edges, gathered.count_below, first.count) if plan.edges is not None else None
    count = int(gathered.count_below(low)[0] + first.count - gathered.count_at_most(high)[0])
    return summary, histogram, _outlier_set((gathered.entry_value, gathered.entry_index), count, shape, low, high, rule, max_listed)


def _sorted_distribution(flat: torch.Tensor, first: FirstPass, shape: tuple[int, ...], rule: WeightRule, bins: int | None, max_listed: int):
    """What `_bucketed_distribution` answers, for a tensor the first pass kept in one bucket: it
    is sorted whole on the CPU and every answer read off the sorted values, without the
    planning over buckets that costs a small tensor more than the sort."""
    values = flat.detach().to("cpu", torch.float64).numpy()  # (n,) by flat index
    ascending = np.sort(values)
    n = first.count

    def percentiles(qs: tuple[float, ...]) -> tuple[float, ...]:
        return _percentiles(ascending.__getitem__, n, qs)

    def mad(median: float) -> float:
        return float(np.sort(np.abs(ascending - median))[_median_deviation_ranks(n)].mean())

    summary = _summary(first, percentiles((50, *PERCENTILES)), mad)
    low, high = _bounds(summary, percentiles, rule)
    histogram = _histogram(_histogram_edges(first, bins), lambda bounds: np.searchsorted(ascending, bounds, side="left"), n) if bins else None
    count = int(np.searchsorted(ascending, low, side="left") + n - np.searchsorted(ascending, high, side="right"))
    return summary, histogram, _outlier_set((values, np.arange(n)), count, shape, low, high, rule, max_listed)


def _distribution(flat: torch.Tensor, first: FirstPass, shape: tuple[int, ...], rule: WeightRule, bins: int | None, max_listed: int):
    """(summary, histogram or None, outliers) of `flat` (n,), after its first pass."""
    answer = _sorted_distribution if first.buckets.bits == 0 else _bucketed_distribution
    return answer(flat, first, shape, rule, bins, max_listed)


def _line_norms(squares: torch.Tensor, axis: str, rule: WeightRule, max_listed: int) -> LineNorms:
    """squares: (rows,) or (columns,) float64 sums of squares along the other axis."""
    norms = squares.sqrt()
    summary, _, outliers = _distribution(norms, first_pass(norms, axis), tuple(norms.shape), rule, None, max_listed)
    return LineNorms(axis, summary, outliers)


def check_counts(bins: int, max_listed: int) -> None:
    if not isinstance(bins, int) or bins < 1:
        raise InputError("bins", "must be an integer >= 1")
    if not isinstance(max_listed, int) or max_listed < 0:
        raise InputError("max_listed", "must be an integer >= 0")


def tensor_stats(
    w: torch.Tensor,
    rule: WeightRule = WeightRule(),
    bins: int = DEFAULT_BINS,
    max_listed: int = DEFAULT_LISTED,
    field: str = "weights",
) -> TensorStats:
    """Distribution, histogram, bimodality and outliers of one tensor (any shape), on its device.

    For a 2-D tensor also the L2 norm of every row and column, with the rule applied to those
    norms. Raises InputError naming `field` for an empty or non-finite tensor.
    """
    check_counts(bins, max_listed)
    flat = _flat(w, field)  # (n,)
    shape = tuple(w.shape)
    first = first_pass(flat, field, shape[1] if len(shape) == 2 else None)
    summary, histogram, outliers = _distribution(flat, first, shape, rule, bins, max_listed)
    skewness, excess_kurtosis, bimodality = _shape_measures(first.count, *first.moments)
    rows = columns = None
    if len(shape) == 2:
        rows = _line_norms(first.row_squares, "row", rule, max_listed)
        columns = _line_norms(first.column_squares, "column", rule, max_listed)
    return TensorStats(
        shape=shape,
        summary=summary,
        skewness=skewness,
        excess_kurtosis=excess_kurtosis,
        bimodality=bimodality,
        histogram=histogram,
        outliers=outliers,
        rows=rows,
        columns=columns,
    )


def weight_outlier_mask(w: torch.Tensor, rule: WeightRule = WeightRule()) -> torch.Tensor:
    """w: any shape. Returns a bool tensor of the same shape on w's device, True at outlier entries.

    Compared exactly: x < low iff x < ceil(low) in x's own dtype, and alike for high.
    """
    flat = _flat(w, "weights")  # (n,)
    first = first_pass(flat, "weights")
    plan = _plan(first, rule, None, 0)
    gathered = gather(flat, first.buckets, plan.wanted, first.min, first.max)
    low, high = _bounds(_gathered_summary(first, gathered, plan), lambda qs: _percentiles(gathered.order_stats, first.count, qs), rule)
    dtype = first.buckets.dtype
    below, above = float(ceil_to(low, dtype)), float(floor_to(high, dtype))
    mask = torch.empty(flat.numel(), dtype=torch.bool, device=flat.device)
    chunk = chunk_length(flat.device)
    for start in range(0, flat.numel(), chunk):
        part = flat[start:start + chunk].to(dtype)
        torch.logical_or(part < below, part > above, out=mask[start:start + chunk])
    return mask.reshape(w.shape)
