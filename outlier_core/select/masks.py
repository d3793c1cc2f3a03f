"""Selection masks: named sets of parameter coordinates, each part with its provenance.

A coordinate is `(parameter, index)` with `parameter` the plain Hugging Face name
(`model.layers.11.mlp.down_proj.weight`). Indices follow the HF layout of the tensor: a
Linear weight is `[out_features, in_features]`, so a *row* `W[i, :]` is everything that
writes output i and a *column* `W[:, j]` is everything that reads input j.

A part selects `entries` (index (N, ndim): one coordinate per row of the index), `rows`
(index (N,), 2-D parameters) or `columns` (index (N,), 2-D parameters). Parts may overlap;
the mask's count is the number of distinct coordinates. Part order and index order are
kept as given (a rule lists its best coordinates first), so files round-trip exactly.

Files: a JSON manifest (human-readable, indices inline) and a `.safetensors` twin holding,
per parameter, the (K, ndim) coordinates it selects, plus one index tensor per part and the
manifest in its metadata. Either file alone loads the mask back. The manifest is also what
the API shows of a mask (`MaskManifest`; `MaskSummary` leaves the indices out); as JSON a
`SelectionMask` is its file.

A mask's size is known before any coordinate exists: per parameter the parts collapse into
distinct whole rows, whole columns and the loose entries outside them, whose count is
plain arithmetic (`counts`). Only `coordinates` materializes positions, one per selected
coordinate and never a repeat, so a caller bounds its memory by checking `count` first.
Every string of a mask is valid Unicode (it must survive JSON and UTF-8) and every shape
fits int64, or the mask is refused before anything is computed from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Mapping

import torch
from pydantic import Field, GetCoreSchemaHandler
from pydantic_core import core_schema

from outlier_core.contract import to_json, write_atomic
from outlier_core.errors import InputError
from outlier_core.load.models import LoadedModel, unbridged
from outlier_core.select.checks import MAX_NAME_CHARS, checked_text, int_row, is_int
from outlier_core.select.coordinates import Collapsed, collapse, row_major_strides

FORMAT = "outlier-lab-mask/1"
KINDS = ("entries", "rows", "columns")
LAYOUT_NOTE = "indices in Hugging Face layout: a Linear weight is [out_features, in_features]"


def plain_name(full_name: str) -> str | None:
    """The HF name of a parameter seen through the bridge, a parametrization or a LoRA layer.

    None for parameters that are not part of the base model (LoRA factors, sparse deltas).
    """
    name = unbridged(full_name)
    if ".lora_" in name or (".parametrizations." in name and not name.endswith(".original")):
        return None
    name = name.replace(".base_layer.", ".")
    if ".parametrizations." in name:  # `x.parametrizations.weight.original` is the base `x.weight`
        prefix, rest = name.split(".parametrizations.", 1)
        name = f"{prefix}.{rest.removesuffix('.original')}"
    return name


def _base_tensors(model: LoadedModel) -> dict[str, torch.Tensor]:
    """Base parameters by plain HF name as the modules hold them (an offloaded layer's are meta)."""
    found: dict[str, torch.Tensor] = {}
    for full_name, p in model.hf_model.named_parameters():
        name = plain_name(full_name)
        if name is not None:
            found.setdefault(name, p)
    return found


class BaseParameters(Mapping[str, torch.Tensor]):
    """Base parameters by plain HF name, also while a sparse delta or LoRA layer is attached.

    A parameter on a device is itself (writes reach the model); an offloaded layer's values
    are read from its offload loader when asked for, so a rule that reads the norms never
    loads the matrices of a model spread to disk.
    """

    def __init__(self, model: LoadedModel):
        self._model = model
        self._tensors = _base_tensors(model)

    def __getitem__(self, name: str) -> torch.Tensor:
        tensor = self._tensors[name]
        return tensor if tensor.device.type != "meta" else self._model.parameter_values(name, tensor)

    def __iter__(self):
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)


def base_parameters(model: LoadedModel) -> BaseParameters:
    """Base parameters by plain HF name, wherever their layers live (see `BaseParameters`)."""
    return BaseParameters(model)


def model_shapes(model: LoadedModel) -> tuple[dict[str, tuple[int, ...]], int]:
    """({plain name: shape}, total parameter count)."""
    params = _base_tensors(model)
    return {n: tuple(p.shape) for n, p in params.items()}, sum(p.numel() for p in params.values())


@dataclass(frozen=True, eq=False)
class MaskPart:
    parameter: str
    kind: str  # entries | rows | columns
    index: torch.Tensor  # int64 on the CPU; entries: (N, ndim), rows/columns: (N,)
    source: str  # the rule or click that added it

    def same_as(self, other: MaskPart) -> bool:
        return (
            (self.parameter, self.kind, self.source) == (other.parameter, other.kind, other.source)
            and self.index.shape == other.index.shape
            and torch.equal(self.index, other.index)
        )

    def flat(self, shape: tuple[int, ...]) -> torch.Tensor:
        """The flat (row-major) positions this part covers in a tensor of `shape`: (M,) int64, unsorted."""
        if self.kind == "entries":
            strides = torch.tensor(row_major_strides(shape), dtype=torch.int64)  # (ndim,)
            return (self.index * strides).sum(dim=1)  # (N,)
        rows, cols = shape
        if self.kind == "rows":
            return (self.index[:, None] * cols + torch.arange(cols)).flatten()  # (N * cols,)
        return (torch.arange(rows)[:, None] * cols + self.index[None, :]).flatten()  # (rows * N,)

    def size(self, shape: tuple[int, ...]) -> int:
        """Coordinates listed by this part, counting repeats (so trimming can budget before a union)."""
        n = int(self.index.shape[0])
        return n if self.kind == "entries" else n * (shape[1] if self.kind == "rows" else shape[0])


@dataclass(frozen=True)
class ModelRef:
    name: str
    n_params: int


@dataclass(frozen=True)
class ParameterShape:
    shape: tuple[int, ...]


@dataclass(frozen=True)
class PartSummary:
    parameter: str
    kind: str
    source: str
    size: int  # entries, rows or columns listed (repeats counted)


@dataclass(frozen=True)
class PartManifest(PartSummary):
    index: list[int] | list[list[int]] | None = None  # None where a listing leaves the indices out


@dataclass(frozen=True)
class MaskSummary:
    """A mask without its indices: what `mask show` prints and a fine-tune run records."""

    format: str
    name: str
    model: ModelRef
    layout: str
    parameters: dict[str, ParameterShape]
    parts: tuple[PartSummary, ...]
    count: Annotated[int, Field(description="distinct coordinates selected")]
    share: Annotated[float, Field(description="count / the model's parameter count")]
    counts: dict[str, int]


@dataclass(frozen=True)
class MaskManifest(MaskSummary):
    """A mask as JSON: its file, with every part's index, and what the API shows of it."""

    parts: tuple[PartManifest, ...]


def make_part(parameter: str, kind: str, index: Any, source: str, shape: tuple[int, ...], field_name: str = "part") -> MaskPart:
    """A checked part. `index` may be a tensor or nested lists of ints."""
    checked_text(parameter, f"{field_name}.parameter")
    if kind not in KINDS:
        raise InputError(f"{field_name}.kind", f"unknown kind {str(kind)[:40]!r}; choose one of {', '.join(KINDS)}")
    if not isinstance(source, str) or not source:
        raise InputError(f"{field_name}.source", "must say which rule or click added the part")
    checked_text(source, f"{field_name}.source")
    if kind != "entries" and len(shape) != 2:
        raise InputError(f"{field_name}.kind", f"{kind} need a 2-D parameter; {parameter} has shape {list(shape)}")
    tensor = _index_tensor(index, f"{field_name}.index")
    if kind == "entries":
        if tensor.numel() == 0:
            tensor = tensor.reshape(0, len(shape))
        if tensor.ndim == 1 and len(shape) == 1:
            tensor = tensor[:, None]
        if tensor.ndim != 2 or tensor.shape[1] != len(shape):
            raise InputError(f"{field_name}.index", f"entries need one [{', '.join(['i'] * len(shape))}] per coordinate for shape {list(shape)}")
        limits = torch.tensor(shape, dtype=torch.int64)  # (ndim,)
    else:
        if tensor.ndim != 1:
            raise InputError(f"{field_name}.index", f"{kind} need a flat list of indices")
        limits = torch.tensor(shape[0] if kind == "rows" else shape[1], dtype=torch.int64)
    if tensor.numel() and ((tensor < 0).any() or (tensor >= limits).any()):
        bad = tensor[((tensor < 0) | (tensor >= limits)).reshape(tensor.shape[0], -1).any(dim=1)][0].tolist()
        raise InputError(f"{field_name}.index", f"{bad} is out of range for {parameter} with shape {list(shape)}")
    return MaskPart(parameter, kind, tensor, source)


def _index_tensor(index: Any, field_name: str) -> torch.Tensor:
    if isinstance(index, torch.Tensor):
        if index.dtype.is_floating_point or index.dtype.is_complex or index.dtype == torch.bool:
            raise InputError(field_name, f"must hold integers, not {index.dtype}")
        return index.detach().to("cpu", torch.int64).clone()
    if not isinstance(index, (list, tuple)) or not (all(is_int(v) for v in index) or all(int_row(v) for v in index)):
        raise InputError(field_name, "must be a list of integers (or of [i, j] integer pairs)")
    try:
        return torch.tensor(index, dtype=torch.int64)
    except (ValueError, TypeError, RuntimeError) as err:  # ragged lists, ints past int64
        raise InputError(field_name, "must be a rectangular list of integers") from err


@dataclass(frozen=True, eq=False)
class SelectionMask:
    name: str
    model: str  # name of the model it was built for
    n_model_params: int  # that model's parameter count: the share's denominator, and a model check
    shapes: Mapping[str, tuple[int, ...]]  # every parameter a part touches -> its shape
    parts: tuple[MaskPart, ...] = field(default=())

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        """As JSON a mask is its manifest with every index: what its file holds."""
        return core_schema.is_instance_schema(
            cls,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda mask: mask.manifest(with_index=True), return_schema=handler.generate_schema(MaskManifest)
            ),
        )

    @classmethod
    def empty(cls, model: LoadedModel, name: str) -> SelectionMask:
        _, total = model_shapes(model)
        return cls(checked_text(name, "name", MAX_NAME_CHARS), model.name, total, {}, ())

    def add(self, model: LoadedModel, parameter: str, kind: str, index: Any, source: str) -> SelectionMask:
        """A new mask with one more part (a click, a dim, a rule's pick), checked against `model`."""
        shapes, _ = model_shapes(model)
        if parameter not in shapes:
            raise InputError("parameter", f"unknown parameter {parameter!r} for model {model.name}")
        part = make_part(parameter, kind, index, source, shapes[parameter])
        return self.with_parts([part], {parameter: shapes[parameter]})

    def with_parts(self, parts: list[MaskPart], shapes: Mapping[str, tuple[int, ...]]) -> SelectionMask:
        merged = {**self.shapes, **{p.parameter: tuple(shapes[p.parameter]) for p in parts}}
        return SelectionMask(self.name, self.model, self.n_model_params, merged, self.parts + tuple(parts))

    def renamed(self, name: str) -> SelectionMask:
        return SelectionMask(checked_text(name, "name", MAX_NAME_CHARS), self.model, self.n_model_params, self.shapes, self.parts)

    @cached_property
    def _collapsed(self) -> dict[str, Collapsed]:
        """Per parameter (in order of first appearance), its parts as distinct rows, columns and loose entries."""
        by_parameter: dict[str, list[MaskPart]] = {}
        for part in self.parts:
            by_parameter.setdefault(part.parameter, []).append(part)
        return {name: collapse(parts, self.shapes[name]) for name, parts in by_parameter.items()}

    @cached_property
    def coordinates(self) -> dict[str, torch.Tensor]:
        """Per parameter, the sorted distinct flat positions selected: (K,) int64. Materializes
        `count` positions: check `count` first where the mask comes from a user."""
        return {name: c.positions(self.shapes[name]) for name, c in self._collapsed.items() if c.count(self.shapes[name])}

    @property
    def count(self) -> int:
        """Distinct coordinates selected, counted without listing them."""
        return sum(self.counts().values())

    @property
    def share(self) -> float:
        return self.count / self.n_model_params

    def counts(self) -> dict[str, int]:
        counted = {name: c.count(self.shapes[name]) for name, c in self._collapsed.items()}
        return {name: n for name, n in counted.items() if n}

    def check_size(self, limit: int, field_name: str = "mask") -> None:
        """Refuse a mask of more than `limit` distinct coordinates, before any is listed."""
        if self.count > limit:
            raise InputError(field_name, f"selects {self.count:,} parameters; this server takes masks of at most {limit:,}")

    def coordinate_tensor(self, parameter: str) -> torch.Tensor:
        """(K, ndim) int64: the selected coordinates of one parameter, row-major order."""
        flat = self.coordinates.get(parameter, torch.zeros(0, dtype=torch.int64))
        shape = self.shapes[parameter]
        return torch.stack(torch.unravel_index(flat, shape), dim=1) if flat.numel() else torch.zeros(0, len(shape), dtype=torch.int64)

    def same_as(self, other: SelectionMask) -> bool:
        return (
            (self.name, self.model, self.n_model_params) == (other.name, other.model, other.n_model_params)
            and dict(self.shapes) == dict(other.shapes)
            and len(self.parts) == len(other.parts)
            and all(a.same_as(b) for a, b in zip(self.parts, other.parts))
        )

    def validate(self, model: LoadedModel, shapes: tuple[dict[str, tuple[int, ...]], int] | None = None) -> None:
        """Raise InputError unless every part fits `model` (names, shapes, parameter count).

        `shapes`: the model's `model_shapes`, when the caller has them already.
        """
        shapes, total = model_shapes(model) if shapes is None else shapes
        if total != self.n_model_params:
            raise InputError(
                "mask.model",
                f"the mask was built for {self.model} ({self.n_model_params:,} parameters) but the loaded "
                f"model is {model.name} ({total:,} parameters)",
            )
        for i, part in enumerate(self.parts):
            if part.parameter not in shapes:
                raise InputError(f"mask.parts[{i}].parameter", f"unknown parameter {part.parameter!r} for model {model.name}")
            if shapes[part.parameter] != self.shapes[part.parameter]:
                raise InputError(
                    "mask.model",
                    f"{part.parameter} has shape {list(shapes[part.parameter])} in {model.name}, "
                    f"but {list(self.shapes[part.parameter])} in the mask (built for {self.model})",
                )

    def trimmed(self, budget: int) -> SelectionMask:
        """Keep parts in order while they fit `budget` distinct coordinates.

        An entries part that does not fit keeps its first entries (its best, for a rule);
        a rows/columns part keeps whole slices only. Later, smaller parts may still fit.
        """
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise InputError("budget", "must be a whole number of parameters >= 1")
        covered: dict[str, torch.Tensor] = {}
        kept: list[MaskPart] = []
        left = budget
        for part in self.parts:
            shape = self.shapes[part.parameter]
            seen = covered.get(part.parameter, torch.zeros(0, dtype=torch.int64))
            per_item = part.flat(shape).reshape(-1, 1) if part.kind == "entries" else _slices(part, shape)  # (N, M)
            novel = ~torch.isin(per_item, seen)  # (N, M)
            novel = novel & _first_occurrence(per_item)
            cost = novel.sum(dim=1).cumsum(0)  # (N,)
            fits = int((cost <= left).sum())
            if fits == 0:
                continue
            index = part.index[:fits]
            kept.append(MaskPart(part.parameter, part.kind, index, part.source))
            covered[part.parameter] = torch.cat([seen, per_item[:fits].flatten()])
            left -= int(cost[fits - 1])
            if left == 0:
                break
        return SelectionMask(self.name, self.model, self.n_model_params, {p.parameter: self.shapes[p.parameter] for p in kept}, tuple(kept))

    def summary(self) -> MaskSummary:
        return MaskSummary(
            format=FORMAT,
            name=self.name,
            model=ModelRef(self.model, self.n_model_params),
            layout=LAYOUT_NOTE,
            parameters={name: ParameterShape(tuple(shape)) for name, shape in self.shapes.items()},
            parts=tuple(PartSummary(p.parameter, p.kind, p.source, int(p.index.shape[0])) for p in self.parts),
            count=self.count,
            share=self.share,
            counts=self.counts(),
        )

    def manifest(self, with_index: bool = False) -> MaskManifest:
        """The mask as its file holds it; without `with_index` the indices are null (for listings)."""
        summary = self.summary()
        parts = tuple(
            PartManifest(**vars(entry), index=part.index.tolist() if with_index else None) for entry, part in zip(summary.parts, self.parts)
        )
        return MaskManifest(**{**vars(summary), "parts": parts})

    def manifest_text(self) -> str:
        """The JSON file, indented for people who open it."""
        return json.dumps(to_json(self), indent=1)

    def to_safetensors_bytes(self) -> bytes:
        from safetensors.torch import save

        tensors = {name: self.coordinate_tensor(name).contiguous() for name in self.coordinates}
        tensors.update({f"parts.{i}": part.index.contiguous() for i, part in enumerate(self.parts)})
        header = to_json(self.summary())  # the tensors hold the indices
        for key in ("count", "share", "counts"):  # the file format keeps only what a reader cannot recount
            del header[key]
        return save(tensors, metadata={"format": FORMAT, "manifest": json.dumps(header)})

    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write `NAME.json` and its twin `NAME.safetensors`; returns both paths."""
        json_path = Path(path).with_suffix(".json")
        tensor_path = json_path.with_suffix(".safetensors")
        json_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(tensor_path, self.to_safetensors_bytes())
        write_atomic(json_path, self.manifest_text() + "\n")  # last: a mask with a manifest is whole
        return json_path, tensor_path


def _slices(part: MaskPart, shape: tuple[int, ...]) -> torch.Tensor:
    """Flat positions of each row/column of a part: (N, M)."""
    rows, cols = shape
    if part.kind == "rows":
        return part.index[:, None] * cols + torch.arange(cols)  # (N, cols)
    return torch.arange(rows)[None, :] * cols + part.index[:, None]  # (N, rows)


def _first_occurrence(per_item: torch.Tensor) -> torch.Tensor:
    """(N, M) positions -> bool (N, M), True where a position appears for the first time in row-major order."""
    flat = per_item.flatten()
    order = torch.argsort(flat, stable=True)
    sorted_flat = flat[order]
    first_sorted = torch.ones_like(sorted_flat, dtype=torch.bool)
    first_sorted[1:] = sorted_flat[1:] != sorted_flat[:-1]
    first = torch.empty_like(first_sorted)
    first[order] = first_sorted
    return first.reshape(per_item.shape)
