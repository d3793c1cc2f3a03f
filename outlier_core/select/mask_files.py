"""Reading masks back: the JSON manifest and the `.safetensors` twin (see `masks` for the format).

Everything read from a user is checked here before a coordinate is computed, and every
failure is an `InputError` naming the bad field of the manifest. Reading never lists a
coordinate: `read_safetensors` returns the mask and the coordinates its file stores, and
`check_stored` compares them once the caller has bounded the mask's size (and checked it
against its model); `from_safetensors_bytes` does both for callers that trust the size.
`read_summary` reads a stored mask's summary from the file's header alone.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, BinaryIO

import torch

from outlier_core.errors import InputError
from outlier_core.select.checks import MAX_NAME_CHARS, checked_shape, checked_text
from outlier_core.select.masks import (
    FORMAT,
    LAYOUT_NOTE,
    MaskPart,
    MaskSummary,
    ModelRef,
    ParameterShape,
    PartSummary,
    SelectionMask,
    make_part,
)

MAX_PARTS = 100_000  # a mask of more parts is not one a person or a rule made
MAX_PARAMETERS = 100_000  # more tensors than any model has
MAX_HEADER_BYTES = 64 * 2**20  # a safetensors header past this is not a mask's


def from_json(payload: Any) -> SelectionMask:
    """A mask from its JSON manifest (as parsed). Raises InputError naming the bad field."""
    manifest = _check_manifest(payload)
    parts_json = manifest["parts"]
    shapes = manifest["shapes"]
    parts = []
    for i, entry in enumerate(parts_json):
        field_name = f"mask.parts[{i}]"
        if not isinstance(entry, dict):
            raise InputError(field_name, "must be an object with parameter, kind, index and source")
        if "index" not in entry:
            raise InputError(f"{field_name}.index", "is missing")
        parts.append(_part_from_json(entry, entry["index"], shapes, field_name))
    return SelectionMask(manifest["name"], manifest["model"], manifest["n_params"], shapes, tuple(parts))


def parse_json(data: bytes | str, field_name: str = "mask") -> Any:
    """JSON text, refused (not crashed on) when it is not JSON or nests past Python's recursion limit."""
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(field_name, f"is not valid JSON ({err})") from err
    except RecursionError as err:
        raise InputError(field_name, "nests too deeply to be a mask manifest") from err


def _part_from_json(entry: dict, index: Any, shapes: dict, field_name: str) -> MaskPart:
    parameter = entry.get("parameter")
    if not isinstance(parameter, str) or parameter not in shapes:
        raise InputError(f"{field_name}.parameter", f"{str(parameter)[:200]!r} is not listed under mask.parameters")
    return make_part(parameter, entry.get("kind"), index, entry.get("source"), shapes[parameter], field_name)


def _check_manifest(payload: Any) -> dict:
    if not isinstance(payload, dict):
        raise InputError("mask", "must be a JSON object")
    if payload.get("format") != FORMAT:
        raise InputError("mask.format", f"must be {FORMAT!r}")
    name = checked_text(payload.get("name"), "mask.name", MAX_NAME_CHARS)
    model = payload.get("model")
    if not isinstance(model, dict):
        raise InputError("mask.model", "must be an object with the model's name and n_params")
    model_name = checked_text(model.get("name"), "mask.model.name")
    n_params = model.get("n_params")
    if isinstance(n_params, bool) or not isinstance(n_params, int) or not 1 <= n_params <= 2**62:
        raise InputError("mask.model.n_params", "must be a positive integer")
    parameters = payload.get("parameters")
    if not isinstance(parameters, dict):
        raise InputError("mask.parameters", "must map parameter names to {shape: [...]}")
    if len(parameters) > MAX_PARAMETERS:
        raise InputError("mask.parameters", f"lists more than {MAX_PARAMETERS:,} parameters")
    shapes = {}
    for pname, spec in parameters.items():
        checked_text(pname, "mask.parameters")
        shapes[pname] = checked_shape(spec.get("shape") if isinstance(spec, dict) else None, f"mask.parameters[{pname}].shape")
    parts = payload.get("parts")
    if not isinstance(parts, list):
        raise InputError("mask.parts", "must be a list")
    if len(parts) > MAX_PARTS:
        raise InputError("mask.parts", f"holds more than {MAX_PARTS:,} parts")
    return {"name": name, "model": model_name, "n_params": n_params, "shapes": shapes, "parts": parts}


def read_safetensors(data: bytes) -> tuple[SelectionMask, dict[str, torch.Tensor]]:
    """A mask from its `.safetensors` twin (the manifest in the metadata, one index tensor per
    part) and the coordinates the file stores per parameter, not yet compared with the parts."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    metadata = _header_metadata(_safetensors_header(data))
    manifest = _manifest_of(metadata)
    try:
        tensors = load(data)
    except (SafetensorError, ValueError) as err:
        raise InputError("mask", f"is not a readable mask file ({err})") from err
    checked = _check_manifest(manifest)
    parts = []
    for i, entry in enumerate(checked["parts"]):
        field_name = f"mask.parts[{i}]"
        if f"parts.{i}" not in tensors or not isinstance(entry, dict):
            raise InputError(field_name, "has no index tensor in the file")
        parts.append(_part_from_json(entry, tensors[f"parts.{i}"], checked["shapes"], field_name))
    mask = SelectionMask(checked["name"], checked["model"], checked["n_params"], checked["shapes"], tuple(parts))
    return mask, {name: tensors[name] for name in checked["shapes"] if name in tensors}


def check_stored(mask: SelectionMask, stored: dict[str, torch.Tensor]) -> None:
    """Refuse a file whose stored coordinates disagree with its parts. Lists `mask.count`
    coordinates: bound the mask's size before calling this."""
    for parameter in mask.coordinates:
        found = stored.get(parameter)
        if found is None or not torch.equal(found, mask.coordinate_tensor(parameter)):
            raise InputError("mask", f"the coordinates stored for {parameter} disagree with its parts")


def from_safetensors_bytes(data: bytes) -> SelectionMask:
    """A mask from its `.safetensors` twin, its stored coordinates checked against its parts."""
    mask, stored = read_safetensors(data)
    check_stored(mask, stored)
    return mask


def _safetensors_header(data: bytes | BinaryIO) -> dict:
    """The JSON header of a safetensors buffer or open file: an 8-byte little-endian length, then JSON."""
    head = data[:8] if isinstance(data, bytes) else data.read(8)
    if len(head) < 8:
        raise InputError("mask", "is not a safetensors file")
    (length,) = struct.unpack("<Q", head)
    if length > MAX_HEADER_BYTES:
        raise InputError("mask", "is not a safetensors file of a mask (its header is too large)")
    text = data[8 : 8 + length] if isinstance(data, bytes) else data.read(length)
    if len(text) < length:
        raise InputError("mask", "is not a safetensors file")
    try:
        header = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise InputError("mask", "is not a safetensors file") from err
    if not isinstance(header, dict):
        raise InputError("mask", "is not a safetensors file")
    return header


def _header_metadata(header: dict) -> dict:
    metadata = header.get("__metadata__")
    return metadata if isinstance(metadata, dict) else {}


def _manifest_of(metadata: dict) -> Any:
    if metadata.get("format") != FORMAT or not isinstance(metadata.get("manifest"), str):
        raise InputError("mask", f"is not an Outlier Lab mask file (format {FORMAT})")
    return parse_json(metadata["manifest"])


def read_summary(path: str | Path) -> MaskSummary:
    """A stored mask's summary from its `.safetensors` header: the manifest in the metadata, a
    part's size and a parameter's count from the shapes of their tensors. No tensor is read."""
    with open(path, "rb") as f:
        header = _safetensors_header(f)
    checked = _check_manifest(_manifest_of(_header_metadata(header)))
    parts = []
    for i, entry in enumerate(checked["parts"]):
        field_name = f"mask.parts[{i}]"
        if not isinstance(entry, dict) or entry.get("parameter") not in checked["shapes"] or entry.get("kind") not in ("entries", "rows", "columns"):
            raise InputError(field_name, "is not a part of this mask")
        source = checked_text(entry.get("source"), f"{field_name}.source")
        parts.append(PartSummary(entry["parameter"], entry["kind"], source, _rows_of(header, f"parts.{i}", field_name)))
    counts = {name: _rows_of(header, name, "mask") for name in checked["shapes"] if name in header}
    counts = {name: n for name, n in counts.items() if n}
    count = sum(counts.values())
    return MaskSummary(
        format=FORMAT,
        name=checked["name"],
        model=ModelRef(checked["model"], checked["n_params"]),
        layout=LAYOUT_NOTE,
        parameters={name: ParameterShape(shape) for name, shape in checked["shapes"].items()},
        parts=tuple(parts),
        count=count,
        share=count / checked["n_params"],
        counts=counts,
    )


def _rows_of(header: dict, key: str, field_name: str) -> int:
    """The first dimension a safetensors header declares for tensor `key`."""
    spec = header.get(key)
    shape = spec.get("shape") if isinstance(spec, dict) else None
    if not isinstance(shape, list) or not shape or not isinstance(shape[0], int) or shape[0] < 0:
        raise InputError(field_name, f"the file has no index tensor {key}")
    return shape[0]


def load_mask(path: str | Path) -> SelectionMask:
    """Load `MASK.json` or `MASK.safetensors`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError("mask", f"{path} is not a readable file")
    if path.suffix == ".safetensors":
        return from_safetensors_bytes(path.read_bytes())
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputError("mask", f"{path} is not valid JSON ({err})") from err
    return from_json(parse_json(text))
