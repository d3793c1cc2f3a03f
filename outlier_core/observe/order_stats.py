"""Exact order statistics of a tensor in two streaming passes, linear in its size.

Pass 1 (`BucketCounter`) counts the entries per bucket of their order key: a float's bits,
kept to the top `bits` (sign, exponent, the leading mantissa bits). A bucket is a
contiguous range of values, log-spaced: with 16 bits a float32 bucket spans 1/128 of an
octave, so a Gaussian-like matrix puts at most ~0.2% of its entries in one. Pass 2
(`gather`) brings back to the CPU the entries (value and flat index) of the few buckets
the questions need: the one that holds a rank, a threshold, a deviation from the median,
the most extreme entries. Every answer is then exact: how many entries lie in the buckets
before comes from pass 1, order inside a bucket from sorting its gathered entries.

Beyond the two passes this costs a sort of the gathered entries, O(g log g); g is a few
percent of the tensor unless many entries share a bucket (a constant tensor, a grid of few
values), where it degrades to sorting those. Tensors of at most `SMALL` entries keep one
bucket: they are sorted whole (by `tensor_stats`, or gathered whole here) and one sort
answers everything, cheaper at that size than planning over buckets. The keys are float32's
or float64's bits; other dtypes are read as float32, which holds them exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

SMALL = 1 << 16  # entries up to which one bucket holds everything
MAX_BITS = 16  # float32 key bits for the largest tensors: 1 sign, 8 exponent, 7 mantissa
_FLOAT64_EXTRA_BITS = 3  # float64's exponent is 3 bits wider
# key dtype -> (int view, unsigned numpy view, numpy float, width in bits)
_INT = {torch.float32: (torch.int32, np.uint32, np.float32, 32), torch.float64: (torch.int64, np.uint64, np.float64, 64)}


def key_dtype(dtype: torch.dtype) -> torch.dtype:
    """The float dtype whose bits order a tensor of `dtype`: float64 stays, anything else is read as float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def chunk_length(device: torch.device) -> int:
    """Entries per streamed chunk: a few MB that stay in cache on a CPU; larger on an accelerator."""
    return 1 << 20 if device.type == "cpu" else 1 << 24


def key_bits(n: int, dtype: torch.dtype) -> int:
    """Key bits for a tensor of n entries: 0 (one bucket) when small, else about n / 4 buckets, at most 2**16.

    Fewer, wider buckets would make pass 2 gather more of the tensor, and finding the gathered
    entries costs more per entry the more of them there are (a mispredicted branch each)."""
    if n <= SMALL:
        return 0
    bits = min(MAX_BITS, max(12, int(math.log2(n)) - 2))
    return bits + (_FLOAT64_EXTRA_BITS if dtype == torch.float64 else 0)


def _bucket_ids(chunk: torch.Tensor, bits: int, out: torch.Tensor) -> torch.Tensor:
    """chunk: (L,) float32 or float64. Returns (L,) the top `bits` bits of each entry's pattern, as a
    non-negative int, written into out[:L] (int32 or int64 as the chunk's width)."""
    int_dtype, _, _, width = _INT[chunk.dtype]
    ids = torch.bitwise_right_shift(chunk.view(int_dtype), width - bits, out=out[:chunk.numel()])
    return ids.bitwise_and_((1 << bits) - 1)


def scratch(like: torch.Tensor, length: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """(length,) uninitialised, on like's device: one buffer reused for every chunk of a pass. A
    fresh multi-MB result per op costs its page faults again on every chunk, more than the op."""
    return torch.empty(length, dtype=dtype or like.dtype, device=like.device)


def as_key(part: torch.Tensor, dtype: torch.dtype, buffer: torch.Tensor | None) -> torch.Tensor:
    """part: (L,) of any float dtype. The same entries in the key dtype: part itself when it has it,
    else copied into buffer[:L]."""
    if part.dtype == dtype:
        return part
    return buffer[:part.numel()].copy_(part)


def ceil_to(bounds: np.ndarray | float, dtype: torch.dtype) -> np.ndarray:
    """The least numbers of `dtype` (float32 or float64) >= bounds: x < bound iff x < that, for x of `dtype`."""
    bounds = np.asarray(bounds, dtype=np.float64)
    if dtype == torch.float64:
        return bounds
    with np.errstate(over="ignore"):  # a bound past float32's range becomes ±inf: still a bound
        nearest = bounds.astype(np.float32)
    return np.where(nearest < bounds, np.nextafter(nearest, np.float32(np.inf)), nearest).astype(np.float64)


def floor_to(bounds: np.ndarray | float, dtype: torch.dtype) -> np.ndarray:
    """The greatest numbers of `dtype` <= bounds: x <= bound iff x <= that."""
    bounds = np.asarray(bounds, dtype=np.float64)
    if dtype == torch.float64:
        return bounds
    with np.errstate(over="ignore"):
        nearest = bounds.astype(np.float32)
    return np.where(nearest > bounds, np.nextafter(nearest, np.float32(-np.inf)), nearest).astype(np.float64)


class BucketCounter:
    """Pass 1: entries per bucket, accumulated chunk by chunk on the tensor's device."""

    def __init__(self, bits: int, dtype: torch.dtype, device: torch.device, chunk: int):
        """chunk: the longest chunk `add` will be given."""
        self.bits, self.dtype = bits, dtype
        self.n = 0
        self._counts = torch.zeros(1 << bits, dtype=torch.int64, device=device) if bits else None
        self._ids = torch.empty(chunk, dtype=_INT[dtype][0], device=device) if bits else None

    def add(self, chunk: torch.Tensor) -> None:
        """chunk: (L,) of the counter's dtype."""
        self.n += chunk.numel()
        if self.bits:
            self._counts += torch.bincount(_bucket_ids(chunk, self.bits, self._ids), minlength=1 << self.bits)

    def finish(self) -> Buckets:
        counts = self._counts.cpu().numpy() if self.bits else np.array([self.n], dtype=np.int64)
        return Buckets.from_ids(self.bits, self.dtype, counts)


@dataclass(frozen=True)
class Buckets:
    """Entries per bucket by position: every value at position p is below every value at p + 1.

    Bucket ids put the positive patterns first, ascending, then the negative ones by
    growing magnitude; positions reorder them by value. The bucket of -0 and the tiniest
    negatives (position half - 1) is folded into that of +0 (position half): -0 == +0.
    """

    bits: int
    dtype: torch.dtype  # float32 or float64: whose bit patterns the keys are
    counts: np.ndarray  # (2**bits,) int64 by position
    below: np.ndarray  # (2**bits + 1,) entries in positions < p

    @classmethod
    def from_ids(cls, bits: int, dtype: torch.dtype, by_id: np.ndarray) -> Buckets:
        counts = by_id.astype(np.int64)
        if bits:
            half = 1 << (bits - 1)
            counts = np.concatenate([by_id[half:][::-1], by_id[:half]])  # negatives by falling magnitude, then positives
            counts[half] += counts[half - 1]
            counts[half - 1] = 0
        return cls(bits, dtype, counts, np.concatenate([[0], np.cumsum(counts)]))

    @property
    def n(self) -> int:
        return int(self.below[-1])

    def _ids_of(self, positions: np.ndarray) -> np.ndarray:
        """Bucket ids of positions (the +0 position gives only the id of +0's own bucket)."""
        size, half = 1 << self.bits, 1 << (self.bits - 1)
        return np.where(positions >= half, positions - half, size - 1 - positions)

    def positions_of(self, values: np.ndarray) -> np.ndarray:
        """Positions of the buckets that hold `values`, finite numbers of the key dtype."""
        values = np.asarray(values, dtype=np.float64)
        if not self.bits:
            return np.zeros(values.shape, dtype=np.int64)
        _, unsigned, floating, width = _INT[self.dtype]
        ids = (values.astype(floating).view(unsigned) >> unsigned(width - self.bits)).astype(np.int64)
        half = 1 << (self.bits - 1)
        positions = np.where(ids < half, half + ids, (1 << self.bits) - 1 - ids)
        return np.where(positions == half - 1, half, positions)

    def rank_positions(self, ranks: np.ndarray) -> np.ndarray:
        """Positions of the buckets that hold the entries of 0-based ranks `ranks` in ascending order."""
        return np.searchsorted(self.below, ranks, side="right") - 1

    def value_ranges(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) float64: the least and greatest value of the key dtype in each bucket."""
        if not self.bits:
            return np.full(len(positions), -np.inf), np.full(len(positions), np.inf)
        _, unsigned, floating, width = _INT[self.dtype]
        shift = width - self.bits
        half = 1 << (self.bits - 1)
        ids = self._ids_of(positions).astype(unsigned)
        first = (ids << unsigned(shift)).view(floating).astype(np.float64)
        last = (((ids + unsigned(1)) << unsigned(shift)) - unsigned(1)).view(floating).astype(np.float64)
        low, high = np.minimum(first, last), np.maximum(first, last)
        folded = np.array([((half + 1) << shift) - 1], dtype=unsigned).view(floating).astype(np.float64)[0]
        return np.where(positions == half, folded, low), high  # +0's bucket also holds the folded negatives

    def lookup(self, wanted: np.ndarray, device: torch.device) -> torch.Tensor:
        """(2**bits,) bool on `device`, indexed by bucket id: True for the buckets `wanted` (by position) marks."""
        table = np.zeros(1 << self.bits, dtype=bool)
        positions = np.flatnonzero(wanted)
        table[self._ids_of(positions)] = True
        half = 1 << (self.bits - 1)
        table[half] |= bool(wanted[half])  # the folded bucket of -0 and the tiniest negatives
        return torch.from_numpy(table).to(device)


@dataclass(frozen=True)
class Gathered:
    """Pass 2: the entries of some buckets, their values sorted, and by flat index."""

    buckets: Buckets
    low: float  # the tensor's min and max, from pass 1
    high: float
    values: np.ndarray  # (g,) float64, ascending
    held: np.ndarray  # (2**bits,) bool by position: gathered (or empty)
    entry_index: np.ndarray  # (g,) int64 flat indices of the gathered entries, ascending ...
    entry_value: np.ndarray  # (g,) float64 ... and their values

    def _check(self, positions: np.ndarray) -> None:
        if not self.held[positions].all():
            raise AssertionError(f"buckets {positions[~self.held[positions]]} were not gathered")

    def _starts(self, positions: np.ndarray) -> np.ndarray:
        """(k,) where the values of each (gathered) bucket begin in `values`: every gathered value of
        an earlier bucket is below the bucket's least value, and none of its own is."""
        self._check(positions)
        return np.searchsorted(self.values, self.buckets.value_ranges(positions)[0], side="left")

    def order_stats(self, ranks: np.ndarray) -> np.ndarray:
        """(k,) float64: the values of 0-based ranks `ranks` in ascending order."""
        positions = self.buckets.rank_positions(ranks)
        return self.values[self._starts(positions) + ranks - self.buckets.below[positions]]

    def _count(self, bounds: np.ndarray, rounded: np.ndarray, side: str) -> np.ndarray:
        positions = self.buckets.positions_of(rounded)
        start = self._starts(positions)
        # values of earlier gathered buckets are below every bound of this one, later ones above
        return self.buckets.below[positions] + np.searchsorted(self.values, bounds, side=side) - start

    def count_below(self, bounds: np.ndarray | float) -> np.ndarray:
        """(k,) entries strictly below each bound (any float64), exactly."""
        bounds = np.atleast_1d(np.asarray(bounds, dtype=np.float64))
        counts = np.where(bounds > self.high, self.buckets.n, 0)
        inside = (bounds > self.low) & (bounds <= self.high)
        counts[inside] = self._count(bounds[inside], ceil_to(bounds[inside], self.buckets.dtype), "left")
        return counts

    def count_at_most(self, bounds: np.ndarray | float) -> np.ndarray:
        """(k,) entries <= each bound (any float64), exactly."""
        bounds = np.atleast_1d(np.asarray(bounds, dtype=np.float64))
        counts = np.where(bounds >= self.high, self.buckets.n, 0)
        inside = (bounds >= self.low) & (bounds < self.high)
        counts[inside] = self._count(bounds[inside], floor_to(bounds[inside], self.buckets.dtype), "right")
        return counts


def mark_between(wanted: np.ndarray, buckets: Buckets, low: float, high: float, data_low: float, data_high: float) -> None:
    """Mark in `wanted` every bucket that may hold a value in [low, high], within the data's [data_low, data_high]."""
    low, high = max(low, data_low), min(high, data_high)
    if low <= high:
        first, last = buckets.positions_of([ceil_to(low, buckets.dtype), floor_to(high, buckets.dtype)])
        wanted[first:last + 1] = True


def _true_positions(selected: torch.Tensor) -> torch.Tensor:
    """selected: (L,) bool. The positions of its True entries, (g,) int64. On a CPU numpy's
    flatnonzero, half the cost of torch's nonzero, its largest single op there."""
    if selected.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(selected.numpy()))
    return selected.nonzero().squeeze(1)


def gather(flat: torch.Tensor, buckets: Buckets, wanted: np.ndarray, low: float, high: float) -> Gathered:
    """Pass 2: the entries of `flat` (n,) in the buckets `wanted` (bool by position) marks, on the CPU."""
    held = wanted | (buckets.counts == 0)
    chunk = min(chunk_length(flat.device), flat.numel())
    values, index = [], []
    table = buckets.lookup(wanted & (buckets.counts > 0), flat.device) if buckets.bits else None
    keys = scratch(flat, chunk, buckets.dtype) if flat.dtype != buckets.dtype else None
    ids = scratch(flat, chunk, _INT[buckets.dtype][0]) if table is not None else None
    selected = scratch(flat, chunk, torch.bool) if table is not None else None
    for start in range(0, flat.numel(), chunk):
        part = as_key(flat[start:start + chunk], buckets.dtype, keys)  # (L,)
        if table is None:
            found = torch.arange(part.numel(), device=flat.device)
        else:
            hit = torch.index_select(table, 0, _bucket_ids(part, buckets.bits, ids), out=selected[:part.numel()])  # (L,)
            found = _true_positions(hit)  # (g_chunk,)
        values.append(part[found])
        index.append(found + start)
    entry_value = torch.cat(values).cpu().double().numpy()  # (g,)
    ascending = np.sort(entry_value)
    return Gathered(buckets, low, high, ascending, held, torch.cat(index).cpu().numpy(), entry_value)


@dataclass(frozen=True)
class DeviationPlan:
    """Where the deviations |x - center| of given ranks must lie, before the center is exact."""

    ranks: np.ndarray  # (k,) ascending
    low: float  # every asked deviation is >= low ...
    high: float  # ... and <= high
    wanted: np.ndarray  # (2**bits,) bool: buckets that may hold a deviation in [low, high]
    high_ranges: np.ndarray  # (b,) conservative greatest deviation of every non-empty bucket
    nonempty: np.ndarray  # (b,) their positions


def plan_deviations(buckets: Buckets, center_low: float, center_high: float, ranks: np.ndarray) -> DeviationPlan:
    """Brackets the deviations of 0-based ranks `ranks` (ascending), for a center known to lie in
    [center_low, center_high], from the bucket counts alone.

    A bucket's deviations lie in a range of its own; counting whole buckets whose range
    starts below t bounds from above how many deviations are < t, and counting those whose
    range ends at or below t bounds from below how many are <= t.
    """
    nonempty = np.flatnonzero(buckets.counts)
    counts = buckets.counts[nonempty]
    low, high = buckets.value_ranges(nonempty)
    low_dev = np.where(high < center_low, center_low - high, np.where(low > center_high, low - center_high, 0.0))
    high_dev = np.maximum(center_high - low, high - center_low)
    slack = 4 * np.finfo(np.float64).eps  # float64 rounding of the differences above
    low_dev, high_dev = low_dev * (1 - slack), high_dev * (1 + slack)
    by_low = np.argsort(low_dev, kind="stable")
    t_low = low_dev[by_low][np.searchsorted(np.cumsum(counts[by_low]), ranks[0] + 1)]
    by_high = np.argsort(high_dev, kind="stable")
    t_high = high_dev[by_high][np.searchsorted(np.cumsum(counts[by_high]), ranks[-1] + 1)]
    wanted = np.zeros(len(buckets.counts), dtype=bool)
    wanted[nonempty[(low_dev <= t_high) & (high_dev >= t_low)]] = True
    return DeviationPlan(ranks, float(t_low), float(t_high), wanted, high_dev, nonempty)


def deviations_at(gathered: Gathered, plan: DeviationPlan, center: float) -> np.ndarray:
    """(k,) float64: the deviations |x - center| of the plan's ranks, exactly, once their buckets are gathered."""
    deviation = np.abs(gathered.values - center)  # (g,)
    whole_below = ~gathered.held[plan.nonempty] & (plan.high_ranges < plan.low)  # every deviation in them is < plan.low
    below = int(gathered.buckets.counts[plan.nonempty[whole_below]].sum()) + int((deviation < plan.low).sum())
    candidates = np.sort(deviation[deviation >= plan.low])
    return candidates[plan.ranks - below]
