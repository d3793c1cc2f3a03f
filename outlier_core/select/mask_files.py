"""Reading masks back: the JSON manifest and the `.safetensors` twin (see `masks` for the format).

Everything read from a user is checked here before a coordinate is computed, and every
failure is an `InputError` naming the bad field of the manifest.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import torch

from outlier_core.errors import InputError
from outlier_core.select.masks import (
    FORMAT,
    MaskPart,
    SelectionMask,
    all_ints,
    make_part,
)


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


def _part_from_json(entry: dict, index: Any, shapes: dict, field_name: str) -> MaskPart:
    parameter = entry.get("parameter")
    if not isinstance(parameter, str) or parameter not in shapes:
        raise InputError(f"{field_name}.parameter", f"{parameter!r} is not listed under mask.parameters")
    return make_part(parameter, entry.get("kind"), index, entry.get("source"), shapes[parameter], field_name)


def _check_manifest(payload: Any) -> dict:
    if not isinstance(payload, dict):
        raise InputError("mask", "must be a JSON object")
    if payload.get("format") != FORMAT:
        raise InputError("mask.format", f"must be {FORMAT!r}, got {payload.get('format')!r}")
    name = payload.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InputError("mask.name", "must be a non-empty string")
    model = payload.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise InputError("mask.model", "must be an object with the model's name and n_params")
    n_params = model.get("n_params")
    if isinstance(n_params, bool) or not isinstance(n_params, int) or n_params < 1:
        raise InputError("mask.model.n_params", "must be a positive integer")
    parameters = payload.get("parameters")
    if not isinstance(parameters, dict):
        raise InputError("mask.parameters", "must map parameter names to {shape: [...]}")
    shapes = {}
    for pname, spec in parameters.items():
        shape = spec.get("shape") if isinstance(spec, dict) else None
        if not isinstance(shape, list) or not shape or not all_ints(shape) or min(shape) < 1:
            raise InputError(f"mask.parameters[{pname}].shape", "must be a list of positive integers")
        shapes[pname] = tuple(shape)
    parts = payload.get("parts")
    if not isinstance(parts, list):
        raise InputError("mask.parts", "must be a list")
    return {"name": name.strip(), "model": model["name"], "n_params": n_params, "shapes": shapes, "parts": parts}


def from_safetensors_bytes(data: bytes) -> SelectionMask:
    """A mask from its `.safetensors` twin: the manifest in the metadata, one index tensor per part."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    metadata = _safetensors_metadata(data)
    if metadata.get("format") != FORMAT or "manifest" not in metadata:
        raise InputError("mask", f"is not an Outlier Lab mask file (format {FORMAT})")
    try:
        manifest = json.loads(metadata["manifest"])
        tensors = load(data)
    except (json.JSONDecodeError, SafetensorError, ValueError) as err:
        raise InputError("mask", f"is not a readable mask file ({err})") from err
    checked = _check_manifest(manifest)
    parts = []
    for i, entry in enumerate(checked["parts"]):
        field_name = f"mask.parts[{i}]"
        if f"parts.{i}" not in tensors or not isinstance(entry, dict):
            raise InputError(field_name, "has no index tensor in the file")
        parts.append(_part_from_json(entry, tensors[f"parts.{i}"], checked["shapes"], field_name))
    mask = SelectionMask(checked["name"], checked["model"], checked["n_params"], checked["shapes"], tuple(parts))
    for parameter in mask.coordinates:
        stored = tensors.get(parameter)
        if stored is None or not torch.equal(stored, mask.coordinate_tensor(parameter)):
            raise InputError("mask", f"the coordinates stored for {parameter} disagree with its parts")
    return mask


def _safetensors_metadata(data: bytes) -> dict:
    """The `__metadata__` of a safetensors buffer: an 8-byte little-endian header length, then JSON."""
    if len(data) < 8:
        raise InputError("mask", "is not a safetensors file")
    (length,) = struct.unpack("<Q", data[:8])
    if length > len(data) - 8:
        raise InputError("mask", "is not a safetensors file")
    try:
        header = json.loads(data[8 : 8 + length])
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError("mask", "is not a safetensors file") from err
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def load_mask(path: str | Path) -> SelectionMask:
    """Load `MASK.json` or `MASK.safetensors`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError("mask", f"{path} is not a readable file")
    if path.suffix == ".safetensors":
        return from_safetensors_bytes(path.read_bytes())
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError("mask", f"{path} is not valid JSON ({err})") from err
    return from_json(payload)

