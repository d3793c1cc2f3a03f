"""The lab notebook: every scan, intervention, mask and run a browser session made, with its
inputs and results, in the same SQLite file as the experiments (RUNS_DIR/sweeps/sweeps.sqlite,
table `notebook`). One row per entry; inputs and results as JSON text.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from outlier_core.ids import new_id
from outlier_core.tune.sweep.store import DB_FILE, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS notebook (
    id TEXT PRIMARY KEY, session TEXT NOT NULL, created REAL NOT NULL, kind TEXT NOT NULL,
    title TEXT NOT NULL, inputs TEXT NOT NULL, results TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS notebook_session ON notebook (session, created);
"""


@dataclass(frozen=True)
class NotebookRow:
    id: str
    session: str
    created: float  # Unix time
    kind: str
    title: str
    inputs: dict
    results: dict


class NotebookStore:
    def __init__(self, folder: Path, max_entries: int):
        """`max_entries`: per session; the oldest go when a session passes it."""
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / DB_FILE
        self.max_entries = max_entries
        with self._transaction() as db:
            db.executescript(SCHEMA)

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self.path)  # the sweeps' own: they write to the same file

    def add(self, session: str, kind: str, title: str, inputs: dict, results: dict) -> NotebookRow:
        row = NotebookRow(new_id(), session, time.time(), kind, title, inputs, results)
        with self._transaction() as db:
            db.execute("INSERT INTO notebook VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (row.id, session, row.created, kind, title, json.dumps(inputs), json.dumps(results)))
            db.execute("DELETE FROM notebook WHERE session = ? AND id NOT IN (SELECT id FROM notebook WHERE session = ? ORDER BY created DESC LIMIT ?)",
                       (session, session, self.max_entries))
        return row

    def list(self, session: str) -> list[NotebookRow]:
        """Newest first."""
        with self._transaction() as db:
            rows = db.execute("SELECT * FROM notebook WHERE session = ? ORDER BY created DESC", (session,)).fetchall()
        return [_row(r) for r in rows]

    def set_results(self, entry_id: str, results: dict) -> None:
        """What an entry's work came to once it ended (a fine-tune's final numbers)."""
        with self._transaction() as db:
            db.execute("UPDATE notebook SET results = ? WHERE id = ?", (json.dumps(results), entry_id))

    def delete(self, session: str, entry_id: str) -> bool:
        with self._transaction() as db:
            return db.execute("DELETE FROM notebook WHERE session = ? AND id = ?", (session, entry_id)).rowcount > 0


def _row(r: sqlite3.Row) -> NotebookRow:
    return NotebookRow(r["id"], r["session"], r["created"], r["kind"], r["title"], json.loads(r["inputs"]), json.loads(r["results"]))
