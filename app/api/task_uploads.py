"""Uploaded task data: a JSONL file checked row by row, then kept under the server's runs folder.

    RUNS_DIR/task_data/<id>/<name>.jsonl

An upload is known by its name and bytes: the id is `task-` and the first 12 hex digits of
their SHA-256, so the same file uploaded twice is one upload, and a fine-tune or sweep that
names the id reads exactly the bytes that were checked. The file is checked where it will
be read from (a folder of its own, under its own name), through the same `task_data`
functions a run uses, so an error names the file's bad line as the run would.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from outlier_core.errors import InputError
from outlier_core.tune.task_data import load_task

FOLDER = "task_data"  # under runs_dir
UPLOAD_ID = re.compile(r"task-[0-9a-f]{12}")
SUFFIX = ".jsonl"
_ODD = re.compile(r"[^A-Za-z0-9._-]+")


class TooLarge(Exception):
    """The file is past the server's `max_task_data_bytes`."""


@dataclass(frozen=True)
class Upload:
    id: str
    name: str  # the file's name as stored, what a run's data source reads
    rows: int
    train: int  # rows trained on
    held_out: int  # rows held out (a seeded fifth), before a run caps how many it scores
    bytes: int


def upload_root(runs_dir: Path) -> Path:
    return Path(runs_dir) / FOLDER


def stored_name(filename: str | None) -> str:
    """The upload's file name, stripped of folders and odd characters; it must be a .jsonl file."""
    name = _ODD.sub("_", Path(filename or "").name).strip("._")
    if not name.lower().endswith(SUFFIX) or len(name) <= len(SUFFIX):
        raise InputError("file", f"upload a JSONL file named *{SUFFIX} (one {{\"prompt\", \"completion\"}} or {{\"messages\"}} row a line)")
    return name[: -len(SUFFIX)][:100] + SUFFIX


def upload_id(name: str, content: bytes) -> str:
    return "task-" + hashlib.sha256(name.encode() + b"\0" + content).hexdigest()[:12]


def _summary(upload: str, path: Path, tokenizer: Any) -> Upload:
    """Every row checked (prompt/completion or chat through the tokenizer's template), split as a run splits it."""
    task = load_task(path, tokenizer, field="file")
    return Upload(upload, path.name, len(task.train) + len(task.held_out), len(task.train), len(task.held_out), path.stat().st_size)


def store_upload(runs_dir: Path, filename: str | None, content: bytes, tokenizer: Any, max_bytes: int) -> Upload:
    """Check `content` as task data and keep it; InputError naming `file` (and the bad line)
    when it is not, TooLarge past `max_bytes`."""
    if len(content) > max_bytes:
        raise TooLarge(f"file: larger than {max_bytes:,} bytes, the most task data this server takes (OUTLIER_LAB_MAX_TASK_DATA_BYTES)")
    name = stored_name(filename)
    root = upload_root(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    ident = upload_id(name, content)
    kept = root / ident / name
    if kept.is_file():
        return _summary(ident, kept, tokenizer)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".upload-"))  # checked in place, then renamed whole: never half-written
    try:
        (staging / name).write_bytes(content)
        upload = _summary(ident, staging / name, tokenizer)
        try:
            os.rename(staging, root / ident)
        except OSError:  # the same upload landed meanwhile
            if not kept.is_file():
                raise
        return upload
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def upload_path(runs_dir: Path, ident: str, field: str = "data") -> Path:
    """The stored file of upload `ident`; InputError naming `field` when there is none."""
    folder = upload_root(runs_dir) / ident
    files = sorted(folder.glob(f"*{SUFFIX}")) if UPLOAD_ID.fullmatch(ident) and folder.is_dir() else []
    if not files:
        raise InputError(field, f"no uploaded task data {ident[:40]!r} on this server; upload it to POST /api/task-data first")
    return files[0]


def list_uploads(runs_dir: Path) -> list[dict]:
    """The uploads kept, newest first: id, name and size (the rows are counted when one is used)."""
    root = upload_root(runs_dir)
    found = [path for path in root.glob(f"task-*/*{SUFFIX}") if UPLOAD_ID.fullmatch(path.parent.name)] if root.is_dir() else []
    found.sort(key=lambda path: path.stat().st_mtime, reverse=True)
    return [{"id": path.parent.name, "name": path.name, "bytes": path.stat().st_size} for path in found]
