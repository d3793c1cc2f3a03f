"""A run's progress, written by the run process into FOLDER/status.json and read by whoever
follows it (the API's job runner, the CLI, a sweep).

The file is small and rewritten whole through a rename, so a reader sees the last complete
status or the one before it, never half of one. The run writes it at most every
`WRITE_EVERY_S` while training, and at once when its phase or state changes.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

from outlier_core.contract import finite, write_atomic

STATUS_FILE = "status.json"
LOG_FILE = "run.log"
RESULT_FILE = "result.json"
WRITE_EVERY_S = 0.25

MEMORY_ENV = "OUTLIER_LAB_RUN_MEMORY_MB"  # the per-run memory cap, passed from the launcher to the run
MEMORY_SIGNS = ("MemoryError", "can't allocate memory", "Cannot allocate memory", "failed to map segment", "std::bad_alloc")

RunState = Literal["running", "done", "failed", "cancelled"]
ENDED: tuple[RunState, ...] = ("done", "failed", "cancelled")


@dataclass(frozen=True)
class RunStatus:
    state: RunState
    step: int = 0  # over all methods of the run
    total: int = 0
    loss: float | None = None
    tokens_per_s: float | None = None
    phase: str | None = None  # e.g. "loading the model", "lora (2/3)"
    error: str | None = None  # why it failed, worded for people
    field: str | None = None  # the setting a refused input named (a bad mask, too little data)
    pid: int | None = None  # the process writing this file (rank 0 under a launcher)
    updated: float = 0.0  # Unix time of this write

    @property
    def ended(self) -> bool:
        return self.state in ENDED


class StatusWriter:
    """The run's side: `update(...)` merges changes into the status and writes it when due."""

    def __init__(self, folder: Path, enabled: bool = True):
        self.path = Path(folder) / STATUS_FILE
        self.enabled = enabled
        self.status = RunStatus("running", pid=os.getpid())
        self._written = 0.0

    def update(self, **changes) -> None:
        urgent = any(k in changes and changes[k] != getattr(self.status, k) for k in ("state", "phase", "total"))
        self.status = replace(self.status, **changes)
        if self.enabled and (urgent or time.monotonic() - self._written >= WRITE_EVERY_S):
            self.write()

    def write(self) -> None:
        if not self.enabled:
            return
        now = time.time()
        self.status = replace(self.status, updated=now)
        write_atomic(self.path, json.dumps(finite(asdict(self.status))) + "\n")
        self._written = time.monotonic()


def read_status(folder: str | Path) -> RunStatus | None:
    """The last status the run wrote; None before its first write (or if the file is not a status)."""
    try:
        return RunStatus(**json.loads((Path(folder) / STATUS_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def read_result(folder: str | Path) -> dict | None:
    try:
        return json.loads((Path(folder) / RESULT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def log_tail(folder: str | Path, lines: int = 20, max_chars: int = 3000) -> str:
    """The end of the run's log, for a failure message."""
    try:
        with open(Path(folder) / LOG_FILE, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4 * max_chars))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])[-max_chars:]


def memory_cap_message(mb: int) -> str:
    return f"run exceeded its memory cap of {mb} MB ({MEMORY_ENV})"
