"""Weight statistics of a loaded model: every norm scale and projection matrix by its HF name.

Statistics describe the unprocessed Hugging Face parameters (no LayerNorm folding, no
centering), by their HF names and in HF layout (`[out, in]` for a Linear); the per-tensor
statistics and rules are in `tensor_stats`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

import torch
from pydantic import Field

from outlier_core.errors import InputError
from outlier_core.load.models import LoadedModel, unbridged
from outlier_core.observe.tensor_stats import (
    DEFAULT_BINS,
    DEFAULT_LISTED,
    TensorStats,
    WeightRule,
    check_counts,
    tensor_stats,
)

KINDS = ("norm", "matrix", "embedding")
QUANTIZED_NOTE = (
    "dequantized from a GGUF checkpoint: entries partly show the quantization grid "
    "(at most 16 distinct values per 32-weight block); norm weights are stored in F32 and are exact"
)


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
            found.append(NamedParameter(name, model.parameter_values(name, tensor), kind, layer, layout))
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
    check_counts(bins, max_listed)
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
