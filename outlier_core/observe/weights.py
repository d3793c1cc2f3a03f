"""Weight statistics and outlier weights: norm scales and projection matrices.

Rules follow BERT Busters (σ from the tensor mean) with robust alternatives, since σ is
inflated by the very outliers it is meant to find. Statistics describe the unprocessed
Hugging Face parameters (no LayerNorm folding, no centering), by their HF names and in
HF layout (`[out, in]` for a Linear).

Every order statistic (percentiles, median, MAD, histogram counts) is read off one sorted
copy of the tensor. numpy's SIMD sort does a 1536 × 576 matrix in ~9 ms on one core where
`torch.sort` takes ~250 ms and `torch.quantile` refuses tensors above 16M entries.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
from pydantic import Field, PlainSerializer

from outlier_core.errors import InputError
from outlier_core.load.models import LoadedModel, unbridged

PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
DEFAULT_BINS = 64
DEFAULT_LISTED = 32  # outlier entries listed per tensor; the count always covers all of them
MAD_TO_SIGMA = 1.4826  # σ of a normal distribution per unit of median absolute deviation
KINDS = ("norm", "matrix", "embedding")
DEFAULT_K = {"sigma": 3.0, "percentile": 99.0, "mad": 3.0}  # per rule kind: BERT Busters' 3σ; the 1st/99th percentiles
QUANTIZED_NOTE = (
    "dequantized from a GGUF checkpoint: entries partly show the quantization grid "
    "(at most 16 distinct values per 32-weight block); norm weights are stored in F32 and are exact"
)


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


def _values(w: torch.Tensor, field: str) -> np.ndarray:
    """Flat numpy values of w: a view when w is already float32 on the CPU; float64 stays float64."""
    if w.numel() == 0:
        raise InputError(field, "is empty")
    dtype = torch.float64 if w.dtype == torch.float64 else torch.float32
    values = w.detach().to("cpu", dtype).reshape(-1).numpy()
    if not np.isfinite(values).all():
        raise InputError(field, "contains NaN or infinite values")
    return values


def _quantile(ordered: np.ndarray, q: float) -> float:
    """The q-th percentile of a sorted array, with numpy's default linear interpolation."""
    position = q / 100 * (len(ordered) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    low_value = float(ordered[lower])
    return low_value + (float(ordered[upper]) - low_value) * (position - lower)


def _count_below(ordered: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """How many entries of a sorted array lie strictly below each float64 bound.

    Compares in the array's own dtype, so a float32 array is never copied to float64:
    when a bound rounds down to a representable value, entries equal to that value are below it.
    """
    cast = bounds.astype(ordered.dtype)  # (B,), nearest representable
    return np.where(cast < bounds, np.searchsorted(ordered, cast, side="right"), np.searchsorted(ordered, cast, side="left"))


def _kth_deviation(ordered: np.ndarray, center: float, k: int) -> float:
    """The k-th smallest (0-based) of |x - center| over a sorted array, in O(log n).

    The deviations below and above `center` form two sorted runs; this is the k-th of their
    union, found by bisecting how many of the k + 1 smallest come from the run below.
    """
    split = int(_count_below(ordered, np.array([center]))[0])  # ordered[:split] < center <= ordered[split:]
    n_below, n_above = split, len(ordered) - split

    def below(i: int) -> float:
        return center - float(ordered[split - 1 - i]) if i >= 0 else -math.inf

    def above(j: int) -> float:
        return float(ordered[split + j]) - center if j >= 0 else -math.inf

    lo, hi = max(0, k + 1 - n_above), min(k + 1, n_below)
    while lo < hi:
        i = (lo + hi) // 2
        if below(i) < above(k - i):
            lo = i + 1
        else:
            hi = i
    return max(below(lo - 1), above(k - lo))


def _median_abs_deviation(ordered: np.ndarray, median: float) -> float:
    n = len(ordered)
    if n % 2:
        return _kth_deviation(ordered, median, n // 2)
    return (_kth_deviation(ordered, median, n // 2 - 1) + _kth_deviation(ordered, median, n // 2)) / 2


def _summary(values: np.ndarray, ordered: np.ndarray) -> tuple[Summary, tuple[float, float, float]]:
    """Returns the summary and the central moments (m2, m3, m4) about the mean."""
    n = values.size
    mean = float(values.mean(dtype=np.float64))
    centered = values - values.dtype.type(mean)  # (n,), the tensor's own precision: float64 here would cost 5x
    squared = centered * centered
    m2 = float(squared.sum(dtype=np.float64)) / n
    m3 = float(np.dot(squared, centered)) / n
    m4 = float(np.dot(squared, squared)) / n
    median = _quantile(ordered, 50)
    summary = Summary(
        count=n,
        min=float(ordered[0]),
        max=float(ordered[-1]),
        mean=mean,
        std=math.sqrt(m2),
        median=median,
        mad=_median_abs_deviation(ordered, median),
        percentiles=tuple((q, _quantile(ordered, q)) for q in PERCENTILES),
    )
    return summary, (m2, m3, m4)


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


def _bounds(summary: Summary, ordered: np.ndarray, rule: WeightRule) -> tuple[float, float]:
    if rule.kind == "sigma":
        half = rule.k * summary.std
        return summary.mean - half, summary.mean + half
    if rule.kind == "mad":
        half = rule.k * MAD_TO_SIGMA * summary.mad
        return summary.median - half, summary.median + half
    return _quantile(ordered, 100 - rule.k), _quantile(ordered, rule.k)


def _outside(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """values < low or values > high, exactly, in the array's own dtype.

    A Python float compared with a float32 array is rounded to float32 first (NEP 50), which
    can move a bound across an entry; compare against the rounded bound and fix the side instead.
    """
    with np.errstate(over="ignore"):  # a bound past the dtype's range becomes ±inf: still exact
        low_cast, high_cast = np.array([low, high]).astype(values.dtype)
    below = values <= low_cast if float(low_cast) < low else values < low_cast
    above = values >= high_cast if float(high_cast) > high else values > high_cast
    return below | above


def _outlier_set(values: np.ndarray, shape: tuple[int, ...], summary: Summary, ordered: np.ndarray, rule: WeightRule, max_listed: int) -> OutlierSet:
    low, high = _bounds(summary, ordered, rule)
    flat_index = np.flatnonzero(_outside(values, low, high))  # (count,)
    found = values[flat_index].astype(np.float64)
    beyond = np.maximum(low - found, found - high)  # how far outside the bounds
    farthest = np.argpartition(-beyond, max_listed)[:max_listed] if beyond.size > max_listed else np.arange(beyond.size)
    keep = flat_index[farthest[np.argsort(-beyond[farthest], kind="stable")]]
    listed = tuple(
        Outlier(tuple(int(i) for i in np.unravel_index(int(f), shape)), float(values[f])) for f in keep
    )
    return OutlierSet(rule, low, high, int(flat_index.size), listed)


def _histogram(ordered: np.ndarray, bins: int) -> Histogram:
    low, high = float(ordered[0]), float(ordered[-1])
    if low == high:  # numpy's convention for a constant tensor
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)  # (bins + 1,) float64
    positions = _count_below(ordered, edges)  # (bins + 1,)
    positions[-1] = len(ordered)  # the last bin is closed on the right
    return Histogram(tuple(float(e) for e in edges), tuple(int(c) for c in np.diff(positions)))


def _line_norms(matrix: np.ndarray, axis: str, rule: WeightRule, max_listed: int) -> LineNorms:
    """matrix: (rows, columns). Norms over the other axis: squares in the matrix dtype, sums in float64."""
    norms = np.sqrt(np.square(matrix).sum(axis=1 if axis == "row" else 0, dtype=np.float64))  # (rows,) or (columns,)
    ordered = np.sort(norms)
    summary, _ = _summary(norms, ordered)
    return LineNorms(axis, summary, _outlier_set(norms, norms.shape, summary, ordered, rule, max_listed))


def _check_counts(bins: int, max_listed: int) -> None:
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
    """Distribution, histogram, bimodality and outliers of one tensor (any shape).

    For a 2-D tensor also the L2 norm of every row and column, with the rule applied to those
    norms. Raises InputError naming `field` for an empty or non-finite tensor.
    """
    _check_counts(bins, max_listed)
    values = _values(w, field)  # (n,)
    ordered = np.sort(values)
    summary, moments = _summary(values, ordered)
    skewness, excess_kurtosis, bimodality = _shape_measures(values.size, *moments)
    shape = tuple(w.shape)
    rows = columns = None
    if len(shape) == 2:
        matrix = values.reshape(shape)
        rows = _line_norms(matrix, "row", rule, max_listed)
        columns = _line_norms(matrix, "column", rule, max_listed)
    return TensorStats(
        shape=shape,
        summary=summary,
        skewness=skewness,
        excess_kurtosis=excess_kurtosis,
        bimodality=bimodality,
        histogram=_histogram(ordered, bins),
        outliers=_outlier_set(values, shape, summary, ordered, rule, max_listed),
        rows=rows,
        columns=columns,
    )


def weight_outlier_mask(w: torch.Tensor, rule: WeightRule = WeightRule()) -> torch.Tensor:
    """w: any shape. Returns a bool tensor of the same shape on w's device, True at outlier entries."""
    values = _values(w, "weights")
    ordered = np.sort(values)
    summary, _ = _summary(values, ordered)
    low, high = _bounds(summary, ordered, rule)
    return torch.from_numpy(_outside(values, low, high)).reshape(w.shape).to(w.device)


# ---- every norm and projection of a loaded model ----


@dataclass(frozen=True)
class ParameterInfo:
    """Which parameter a `ParameterStats` describes."""

    # e.g. model.layers.11.post_attention_layernorm.weight
    name: Annotated[str, Field(description="plain Hugging Face name")]
    kind: str  # norm | matrix | embedding
    layer: int | None  # None outside the blocks (embeddings, final norm)
    layout: str | None  # "[out, in]" for a Linear, "[in, out]" for GPT-2's Conv1D, None for vectors
    effective_scale_offset: Annotated[float, Field(description="the statistics describe offset + w (1.0 for Gemma-style norms)")]
    note: str | None


@dataclass(frozen=True)
class ParameterStats(TensorStats, ParameterInfo):
    """One parameter's statistics as one flat record: ParameterInfo's fields, then TensorStats'."""


@dataclass(frozen=True)
class ModelWeightStats:
    model: str
    rule: WeightRule
    kinds: tuple[str, ...]
    norm_offset: float  # the model's norms scale by norm_offset + w
    quantized_source: bool
    parameters: tuple[ParameterStats, ...]


@dataclass(frozen=True)
class NamedParameter:
    name: str  # plain HF name
    tensor: torch.Tensor
    kind: str
    layer: int | None
    layout: str | None


def parameter_layer(name: str) -> int | None:
    """The block index in an HF name (`model.layers.11.mlp...` -> 11), None outside the blocks."""
    found = re.search(r"\.(\d+)\.", name)
    return int(found.group(1)) if found else None


def _owner_classes(model: LoadedModel) -> dict[str, str]:
    """Plain HF parameter name -> class name of the module that owns it (seen through the bridge)."""
    owners = {}
    for module_name, module in model.hf_model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            full = unbridged(f"{module_name}.{param_name}")
            owners.setdefault(full, type(module).__name__)
    return owners


def _classify(name: str, tensor: torch.Tensor, owner: str, vocab_size: int) -> tuple[str | None, str | None]:
    """(kind, layout) of one parameter, or (None, None) for what we do not describe (biases)."""
    is_weight = name.endswith(".weight")
    if "Norm" in owner or (owner == "" and "norm" in name.lower()):
        return ("norm", None) if is_weight else (None, None)
    if tensor.ndim != 2 or not is_weight:
        return None, None
    if owner == "Embedding" or vocab_size in tensor.shape:
        return "embedding", "[out, in]" if owner == "Linear" else None
    if owner == "Conv1D":
        return "matrix", "[in, out]"
    return "matrix", "[out, in]"


def model_parameters(model: LoadedModel, kinds: tuple[str, ...] = KINDS, layers: tuple[int, ...] | None = None) -> list[NamedParameter]:
    """The norm weights, projection matrices and embeddings of a model, in HF order."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise InputError("kinds", f"choose from {', '.join(KINDS)}; got {', '.join(kinds) or 'nothing'}")
    if layers is not None:
        bad = [l for l in layers if not 0 <= l < model.n_layers]
        if bad:
            raise InputError("layer", f"{bad[0]} is out of range; the model has layers 0..{model.n_layers - 1}")
    owners = _owner_classes(model)
    vocab_size = model.hf_model.config.get_text_config().vocab_size
    found = []
    for name, tensor in model.hf_parameters().items():
        kind, layout = _classify(name, tensor, owners.get(name, ""), vocab_size)
        layer = parameter_layer(name)
        if kind in kinds and (layers is None or layer in layers):
            found.append(NamedParameter(name, tensor, kind, layer, layout))
    return found


def _effective(tensor: torch.Tensor, offset: float) -> torch.Tensor:
    """What a norm multiplies by: offset + w (Gemma stores w and scales by 1 + w).

    Added in float32 at least: 1 + w in bfloat16 would round a small w away.
    """
    if not offset:
        return tensor
    return tensor.detach().to(torch.promote_types(tensor.dtype, torch.float32)) + offset


def model_weight_stats(
    model: LoadedModel,
    rule: WeightRule = WeightRule(),
    kinds: tuple[str, ...] = ("norm", "matrix"),
    layers: tuple[int, ...] | None = None,
    bins: int = DEFAULT_BINS,
    max_listed: int = DEFAULT_LISTED,
) -> ModelWeightStats:
    """`tensor_stats` of every parameter of the chosen kinds (and layers), from the unprocessed weights.

    Norm statistics describe the effective scale `model.norm_offset + w`.
    """
    _check_counts(bins, max_listed)
    entries = tuple(parameter_stats(model, p, rule, bins, max_listed) for p in model_parameters(model, kinds, layers))
    return ModelWeightStats(model.name, rule, tuple(kinds), model.norm_offset, model.quantized_source, entries)


def named_parameter(model: LoadedModel, name: str, field: str = "name") -> NamedParameter:
    """The norm, matrix or embedding called `name` (plain HF name)."""
    found = {p.name: p for p in model_parameters(model, KINDS)}
    if name not in found:
        hint = next(iter(found), "")
        raise InputError(field, f"no norm, matrix or embedding named {name!r}; names look like {hint!r}")
    return found[name]


def parameter_stats(
    model: LoadedModel,
    p: NamedParameter,
    rule: WeightRule = WeightRule(),
    bins: int = DEFAULT_BINS,
    max_listed: int = DEFAULT_LISTED,
    field: str | None = None,
) -> ParameterStats:
    """`tensor_stats` of one parameter; a norm's describe its effective scale `model.norm_offset + w`.

    Errors about the tensor's values name `field` (default: the parameter's name).
    """
    offset = model.norm_offset if p.kind == "norm" else 0.0
    note = QUANTIZED_NOTE if model.quantized_source and p.kind != "norm" else None
    stats = tensor_stats(_effective(p.tensor, offset), rule, bins, max_listed, field=field or p.name)
    return ParameterStats(p.name, p.kind, p.layer, p.layout, offset, note, **vars(stats))


# ---- the cross-view: norm weights at given residual dims ----


@dataclass(frozen=True)
class NormAtDim:
    layer: int
    norm: str  # the norm's name inside its block, e.g. post_attention_layernorm
    parameter: str  # plain HF name
    dim: int
    value: Annotated[float, Field(description="effective scale, norm_offset + w")]
    rank_abs: Annotated[int, Field(description="entries of the vector with a strictly smaller |value|: 0 is the smallest")]
    rank_signed: int  # entries with a strictly smaller signed value
    size: int  # length of the vector


@dataclass(frozen=True)
class NormAtDims:
    dims: tuple[int, ...]
    effective_scale_offset: float
    entries: tuple[NormAtDim, ...]  # by layer, then norm (HF order), then dim


def norm_at_dims(model: LoadedModel, dims: tuple[int, ...] | list[int], layers: tuple[int, ...] | None = None) -> NormAtDims:
    """For each layer's residual-width norms (input_layernorm, post_attention_layernorm, ...),
    the effective scale at each dim and its rank within that vector.

    Per-head norms (Gemma's q_norm / k_norm) are skipped: their entries are not residual dims.
    """
    dims = tuple(int(d) for d in dims)
    if not dims:
        raise InputError("dims", "give at least one dim")
    bad = [d for d in dims if not 0 <= d < model.d_model]
    if bad:
        raise InputError("dims", f"{bad[0]} is out of range; the residual stream has dims 0..{model.d_model - 1}")
    index = torch.tensor(dims)
    entries = []
    for p in model_parameters(model, ("norm",), layers):
        if p.layer is None or p.tensor.shape != (model.d_model,):
            continue
        scale = p.tensor.detach().to("cpu", torch.float64) + model.norm_offset  # (D,), the effective scale
        at = scale[index]  # (len(dims),)
        rank_abs = (scale.abs()[None, :] < at.abs()[:, None]).sum(dim=1)  # (len(dims),)
        rank_signed = (scale[None, :] < at[:, None]).sum(dim=1)
        norm = p.name.split(f".{p.layer}.", 1)[1].removesuffix(".weight")
        for i, dim in enumerate(dims):
            entries.append(NormAtDim(p.layer, norm, p.name, dim, float(at[i]), int(rank_abs[i]), int(rank_signed[i]), model.d_model))
    return NormAtDims(dims, model.norm_offset, tuple(entries))
