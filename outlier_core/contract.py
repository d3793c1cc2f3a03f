"""A result's JSON shape is its dataclass: pydantic turns one into plain JSON values.

The API declares the same dataclasses as response models, so a file on disk, the CLI's
`--json` and an HTTP response share one definition of every field.
"""

from __future__ import annotations

import json
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
    """`result` as indented JSON in `path` (the run files people open by hand)."""
    Path(path).write_text(json.dumps(to_json(result), indent=1) + "\n", encoding="utf-8")
