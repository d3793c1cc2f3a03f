"""A result's JSON shape is its dataclass: pydantic turns one into plain JSON values.

The API declares the same dataclasses as response models, so a file on disk, the CLI's
`--json` and an HTTP response share one definition of every field.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter


@cache
def _adapter(kind: type) -> TypeAdapter:
    return TypeAdapter(kind)


def to_json(result: Any) -> Any:
    """A dataclass, and everything it holds, as JSON values (tuples become lists).

    Floats stay as they are, NaN and inf included: a writer that must stay valid JSON
    maps them itself.
    """
    return _adapter(type(result)).dump_python(result, mode="json")


def write_json(path: str | Path, result: Any) -> None:
    """`result` as indented JSON in `path` (the run files people open by hand), written
    atomically: a reader (or a run killed mid-write) never leaves half a file."""
    write_atomic(path, json.dumps(to_json(result), indent=1) + "\n")


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """`data` (text as UTF-8) into `path` through a temporary file beside it and a rename:
    a reader, or a process killed mid-write, never sees half a file."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    descriptor, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def finite(payload: Any) -> Any:
    """JSON values with NaN/inf as None, for files and status that must stay valid JSON
    (a diverged loss is reported, not kept)."""
    if isinstance(payload, float):
        return payload if math.isfinite(payload) else None
    if isinstance(payload, dict):
        return {k: finite(v) for k, v in payload.items()}
    if isinstance(payload, list):
        return [finite(v) for v in payload]
    return payload
