"""The lab notebook: what a browser session did, listed, exported, each entry with copy-as-code.

The store opens on first use beside the experiments (runs_dir/sweeps); SQLite runs in worker
threads, never on the event loop. A run entry whose job has ended gets the run's final numbers
when the notebook is next read (`notebook_runs`).
"""

from __future__ import annotations

import csv
import io
import json
import threading
from dataclasses import asdict
from typing import Annotated, Literal

import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request, Response

from app.api.deps import SettingsDep
from app.api.errors import ApiError
from app.api.notebook_code import code_for
from app.api.notebook_runs import with_final_numbers
from app.api.notebook_store import NotebookRow, NotebookStore
from app.api.schemas.common import ERROR_RESPONSES, error
from app.api.schemas.notebook import SESSION_PATTERN, NotebookEntryOut, NotebookIn, NotebookOut

router = APIRouter(prefix="/notebook", tags=["notebook"])

MAX_ENTRY_BYTES = 256 * 1024  # inputs and results of one entry, as JSON
MAX_ENTRIES = 2_000  # per session; the oldest go first
SESSION_QUERY = Annotated[str, Query(pattern=SESSION_PATTERN)]
_opening = threading.Lock()


def get_notebook(request: Request, settings: SettingsDep) -> NotebookStore:
    with _opening:
        if getattr(request.app.state, "notebook", None) is None:
            request.app.state.notebook = NotebookStore(settings.runs_dir / "sweeps", MAX_ENTRIES)
        return request.app.state.notebook


NotebookDep = Annotated[NotebookStore, Depends(get_notebook)]


def listed(request: Request, store: NotebookStore, session: str) -> list[NotebookRow]:
    """The session's entries, newest first, run entries completed once their job has ended (in a worker thread)."""
    return with_final_numbers(store, request.app.state.jobs, store.list(session))


def entry_out(row: NotebookRow) -> NotebookEntryOut:
    return NotebookEntryOut(**asdict(row), code=asdict(code_for(row.kind, row.inputs, row.results)))


@router.post("", response_model=NotebookEntryOut, status_code=201, responses=ERROR_RESPONSES | error(413, "the entry is too large"))
async def add_entry(body: NotebookIn, store: NotebookDep) -> NotebookEntryOut:
    size = len(json.dumps(body.inputs)) + len(json.dumps(body.results))
    if size > MAX_ENTRY_BYTES:
        raise ApiError(413, f"inputs and results: {size:,} bytes of JSON; a notebook entry takes at most {MAX_ENTRY_BYTES:,}", "results")
    row = await anyio.to_thread.run_sync(store.add, body.session, body.kind, body.title, body.inputs, body.results)
    return entry_out(row)


@router.get("", response_model=NotebookOut, responses=ERROR_RESPONSES)
async def list_entries(session: SESSION_QUERY, request: Request, store: NotebookDep) -> NotebookOut:
    rows = await anyio.to_thread.run_sync(listed, request, store, session)
    return NotebookOut(entries=[entry_out(row) for row in rows])


@router.get("/export", response_class=Response, responses=ERROR_RESPONSES | {200: {"content": {"application/json": {}, "text/csv": {}}, "description": "the notebook"}})
async def export(session: SESSION_QUERY, request: Request, store: NotebookDep, file_format: Annotated[Literal["json", "csv"], Query(alias="format")] = "json") -> Response:
    """The session's notebook as JSON (every field, code included) or CSV (one row per entry, inputs and results as JSON cells)."""
    entries = [entry_out(row) for row in await anyio.to_thread.run_sync(listed, request, store, session)]
    headers = {"Content-Disposition": f'attachment; filename="notebook.{file_format}"'}
    if file_format == "json":
        return Response(NotebookOut(entries=entries).model_dump_json(indent=2), media_type="application/json", headers=headers)
    return Response(as_csv(entries), media_type="text/csv", headers=headers)


def as_csv(entries: list[NotebookEntryOut]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "created", "kind", "title", "inputs", "results", "cli", "python"])
    for e in entries:
        writer.writerow([e.id, f"{e.created:.3f}", e.kind, e.title, json.dumps(e.inputs), json.dumps(e.results), e.code.cli or "", e.code.python])
    return out.getvalue()


@router.delete("/{entry_id}", status_code=204, responses=ERROR_RESPONSES | error(404, "no such entry in this session"))
async def delete_entry(entry_id: str, session: SESSION_QUERY, store: NotebookDep) -> None:
    if not await anyio.to_thread.run_sync(store.delete, session, entry_id):
        raise ApiError(404, f"entry_id: no entry {entry_id!r} in this session", "entry_id")
