"""Sweeps in SQLite: one file beside the runs, ROOT/sweeps.sqlite.

    sweeps        id, its config, its state, the pid of the process driving it
    trials        key (the hash of its RunConfig), method, budget, seed, setting, the config
                  that replays it, its run folder, state, trainable count, metrics
    sweep_trials  which trials make up which sweep, in order

WAL journal: the API reads while a sweep writes. Every change is its own transaction, a
finished trial's state and metrics in one, so a process dying mid-sweep loses nothing
that had finished; a trial left `running` is found again by the next run of the sweep.
The trials' run folders live under ROOT/trials/, shared by every sweep of the store.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

from outlier_core.contract import finite, to_json
from outlier_core.errors import InputError
from outlier_core.tune.sweep.config import SweepConfig, Trial, read_sweep, sweep_json

DB_FILE = "sweeps.sqlite"
TRIALS_DIR = "trials"
TrialState = Literal["pending", "running", "done", "failed", "cancelled"]
SweepState = Literal["pending", "running", "done", "failed", "cancelled"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS sweeps (
    id TEXT PRIMARY KEY, config TEXT NOT NULL, state TEXT NOT NULL, created REAL NOT NULL,
    updated REAL NOT NULL, pid INTEGER, pid_started REAL
);
CREATE TABLE IF NOT EXISTS trials (
    key TEXT PRIMARY KEY, method TEXT NOT NULL, budget INTEGER NOT NULL, seed INTEGER NOT NULL,
    setting TEXT NOT NULL, config TEXT NOT NULL, folder TEXT NOT NULL, state TEXT NOT NULL,
    trainable INTEGER, metrics TEXT, error TEXT, launches INTEGER NOT NULL DEFAULT 0, updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sweep_trials (
    sweep TEXT NOT NULL, key TEXT NOT NULL, position INTEGER NOT NULL, PRIMARY KEY (sweep, key)
);
"""


@dataclass(frozen=True)
class TrialRecord:
    key: str
    method: str
    budget: int
    seed: int
    setting: str
    folder: str  # relative to the store's root
    state: TrialState
    trainable: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    launches: int = 0  # how many times a run process was started for it
    config: dict = field(default_factory=dict)  # the RunConfig that replays it, as JSON values


@dataclass(frozen=True)
class SweepRecord:
    id: str
    config: SweepConfig
    state: SweepState
    created: float
    updated: float
    pid: int | None = None
    pid_started: float | None = None


@contextmanager
def transaction(path: Path) -> Iterator[sqlite3.Connection]:
    """One connection to the store's file, one transaction: committed on leaving, rolled back
    on an error; WAL, so that sweeps and the notebook (which shares the file) write side by side."""
    with closing(sqlite3.connect(path, timeout=30)) as db:
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        with db:
            yield db


class SweepStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / DB_FILE
        with self._transaction() as db:
            db.executescript(SCHEMA)

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self.path)

    def register(self, sweep_id: str, sweep: SweepConfig, trials: list[Trial]) -> None:
        """The sweep and its trials, as pending where they are new (known trials keep their state)."""
        now = time.time()
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO sweeps VALUES (?, ?, 'pending', ?, ?, NULL, NULL)", (sweep_id, sweep_json(sweep), now, now))
            for position, trial in enumerate(trials):
                db.execute(
                    "INSERT OR IGNORE INTO trials (key, method, budget, seed, setting, config, folder, state, updated) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
                    (trial.key, trial.method, trial.budget, trial.seed, trial.setting, json.dumps(to_json(trial.config)), f"{TRIALS_DIR}/{trial.folder_name}", now),
                )
                db.execute("INSERT OR IGNORE INTO sweep_trials VALUES (?, ?, ?)", (sweep_id, trial.key, position))

    def start_trial(self, key: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE trials SET state = 'running', error = NULL, launches = launches + 1, updated = ? WHERE key = ?", (time.time(), key))

    def finish_trial(self, key: str, state: TrialState, trainable: int | None = None, metrics: dict[str, float] | None = None, error: str | None = None) -> None:
        """A trial's end, state and metrics together, in one transaction."""
        with self._transaction() as db:
            db.execute(
                "UPDATE trials SET state = ?, trainable = ?, metrics = ?, error = ?, updated = ? WHERE key = ?",
                (state, trainable, json.dumps(finite(metrics or {})), error, time.time(), key),
            )

    def set_sweep(self, sweep_id: str, state: SweepState, pid: int | None = None, pid_started: float | None = None) -> None:
        with self._transaction() as db:
            db.execute("UPDATE sweeps SET state = ?, pid = ?, pid_started = ?, updated = ? WHERE id = ?", (state, pid, pid_started, time.time(), sweep_id))

    def trial(self, key: str) -> TrialRecord:
        with self._transaction() as db:
            row = db.execute("SELECT * FROM trials WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise InputError("trial", f"no trial {key!r} in {self.path}")
        return _trial(row)

    def trials(self, sweep_id: str) -> list[TrialRecord]:
        with self._transaction() as db:
            rows = db.execute(
                "SELECT trials.* FROM sweep_trials JOIN trials ON trials.key = sweep_trials.key WHERE sweep = ? ORDER BY position", (sweep_id,)
            ).fetchall()
        return [_trial(row) for row in rows]

    def sweep(self, sweep_id: str) -> SweepRecord:
        with self._transaction() as db:
            row = db.execute("SELECT * FROM sweeps WHERE id = ?", (sweep_id,)).fetchone()
        if row is None:
            raise InputError("sweep_id", f"no sweep {sweep_id!r}")
        return _sweep(row)

    def sweeps(self) -> list[SweepRecord]:
        with self._transaction() as db:
            rows = db.execute("SELECT * FROM sweeps ORDER BY created DESC").fetchall()
        return [_sweep(row) for row in rows]


def _trial(row: sqlite3.Row) -> TrialRecord:
    return TrialRecord(
        key=row["key"], method=row["method"], budget=row["budget"], seed=row["seed"], setting=row["setting"], folder=row["folder"],
        state=row["state"], trainable=row["trainable"], metrics=json.loads(row["metrics"] or "{}"), error=row["error"],
        launches=row["launches"], config=json.loads(row["config"]),
    )


def _sweep(row: sqlite3.Row) -> SweepRecord:
    return SweepRecord(row["id"], read_sweep(row["config"]), row["state"], row["created"], row["updated"], row["pid"], row["pid_started"])
