"""The comparisons under a runs directory, as a listing reads them back from disk."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

log = logging.getLogger(__name__)


class RunHeadline(TypedDict):
    """One method's headline numbers, as its comparison.json holds them (null where absent)."""

    name: str | None
    method: str | None
    trainable: int | None
    changed: int | None
    eval_before: dict[str, Any] | None
    eval_after: dict[str, Any] | None
    seconds: float | None
    deltas: str | None  # its deltas file, or null when none was saved


class RunSummary(TypedDict):
    id: str  # the folder's name under the runs directory
    folder: str
    modified: float  # Unix time of comparison.json
    mask: str | None  # the mask's name
    runs: list[RunHeadline]


def list_runs(root: str | Path) -> list[RunSummary]:
    """Comparisons under a runs directory, newest first: folder, mask, and per run the headline numbers."""
    found: list[RunSummary] = []
    for path in Path(root).glob("*/comparison.json"):
        try:
            comparison = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            log.warning("skipping unreadable %s", path)
            continue
        found.append({
            "id": path.parent.name,
            "folder": str(path.parent),
            "modified": path.stat().st_mtime,
            "mask": comparison.get("mask", {}).get("name"),
            "runs": [{k: r.get(k) for k in RunHeadline.__annotations__} for r in comparison.get("runs", [])],
        })
    return sorted(found, key=lambda r: -r["modified"])
