"""Task data upload, as the Fine-tune and Experiments pages offer it: a JSONL file dropped on
the page goes to POST /api/task-data, which checks it row by row and keeps it; the page
remembers the upload (its id, what it holds) and names the id when it starts a run."""

from __future__ import annotations

import base64
import binascii

from dash import dcc, html, no_update

from app.ui.client import ApiProblem
from app.ui.components import api, note, problem_box

HINT = 'Drop a JSONL task file ({"prompt", "completion"} or {"messages"} rows, the loss on the completion), or click to choose'


def upload_block(prefix: str) -> html.Div:
    """The drop zone `<prefix>-task-upload`, the store `<prefix>-task` of the upload, and what it holds `<prefix>-task-info`."""
    return html.Div([
        dcc.Upload(id=f"{prefix}-task-upload", children=html.Div(HINT), className="upload"),
        dcc.Store(id=f"{prefix}-task"),
        html.Div(id=f"{prefix}-task-info"),
    ])


def describe(task: dict) -> str:
    return f"Uploaded {task['name']}: {task['rows']:,} rows, {task['train']:,} to train on and {task['held_out']:,} held out (id {task['id']})."


def send(contents: str | None, filename: str | None) -> tuple:
    """(the upload for the store, what happened) after a file was dropped; a refusal empties the
    store (no run starts on an earlier file by mistake) and says which line is wrong, as the API names it."""
    if not contents:
        return no_update, no_update
    try:
        data = base64.b64decode(contents.split(",", 1)[1])
    except (IndexError, binascii.Error):
        return None, problem_box(f"{filename or 'the file'} could not be read")
    try:
        task = api().upload_task_data(filename or "upload.jsonl", data)
    except ApiProblem as problem:
        return None, problem_box(problem, f"use {filename}")
    return task, note(describe(task), "ok")
