"""Long work off the request path: one worker thread, a queue, progress, cancel, files on disk.

A job is a function `work(ctx) -> dict` run by the worker. It reports progress through
`ctx.report(...)` and checks `ctx.cancelled()` at each step; a job that raises after its
cancel was asked for ends `cancelled`, any other exception ends it `failed` with the
message, and the worker moves on to the next job. Each job owns a folder
`ROOT/<job id>/`: `job.json` (its status, rewritten as it runs), `result.json` (what the
work returned) and whatever the work writes there, so a status survives a page reload
and a restart. A job still `queued` or `running` when its process died reads `failed`
after the restart. One runner per runs directory.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import ConfigDict

from outlier_core.errors import InputError
from outlier_core.ids import is_id, new_id

log = logging.getLogger(__name__)

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
FINISHED: tuple[JobState, ...] = ("done", "failed", "cancelled")
SAVE_EVERY_S = 1.0  # progress is written to disk at most this often


@dataclass(frozen=True)
class JobStatus:
    id: str
    kind: str
    state: JobState
    step: int = 0
    total: int = 0
    loss: float | None = None
    tokens_per_s: float | None = None
    eta_s: float | None = None
    phase: str | None = None  # what is running now, e.g. "lora (4/5)"
    error: str | None = None
    created: float = 0.0  # Unix times
    started: float | None = None
    finished: float | None = None
    params: dict | None = None  # what the job was asked to do, as given at submit

    # every field is always written, defaults included: the API's docs list them all as present
    __pydantic_config__ = ConfigDict(json_schema_serialization_defaults_required=True)


class JobContext:
    """What a running job sees: its folder, a progress reporter and the cancel flag."""

    def __init__(self, runner: JobRunner, job_id: str, folder: Path):
        self._runner = runner
        self.id = job_id
        self.folder = folder
        self._cancel = threading.Event()

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def report(self, step: int, total: int, loss: float | None = None, tokens_per_s: float | None = None, phase: str | None = None) -> None:
        self._runner._progress(self.id, step, total, loss, tokens_per_s, phase)


class JobRunner:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._jobs: dict[str, JobStatus] = {}
        self._work: dict[str, Callable[[JobContext], dict]] = {}
        self._contexts: dict[str, JobContext] = {}
        self._saved_at: dict[str, float] = {}
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._load()

    # ---- public ----

    def submit(self, kind: str, work: Callable[[JobContext], dict], params: dict | None = None) -> JobStatus:
        job_id = new_id()
        status = JobStatus(job_id, kind, "queued", created=time.time(), params=params)
        (self.root / job_id).mkdir()
        with self._lock:
            self._jobs[job_id] = status
            self._work[job_id] = work
            self._contexts[job_id] = JobContext(self, job_id, self.root / job_id)
            self._save(status)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._serve, name="outlier-lab-jobs", daemon=True)
                self._worker.start()
        self._queue.put(job_id)
        log.info("job %s (%s) queued", job_id, kind)
        return status

    def get(self, job_id: str) -> JobStatus:
        with self._lock:
            if job_id not in self._jobs:
                raise InputError("job_id", f"unknown job {job_id!r}")
            return self._jobs[job_id]

    def list(self) -> list[JobStatus]:
        """Newest first."""
        with self._lock:
            return sorted(self._jobs.values(), key=lambda s: -s.created)

    def result(self, job_id: str) -> dict | None:
        """What the work returned, once the job is done (None before)."""
        self.get(job_id)
        path = self.root / job_id / "result.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def folder(self, job_id: str) -> Path:
        self.get(job_id)
        return self.root / job_id

    def cancel(self, job_id: str) -> JobStatus:
        """Queued: cancelled at once. Running: stops at its next step. Finished: unchanged."""
        with self._lock:
            status = self._jobs.get(job_id)
            if status is None:
                raise InputError("job_id", f"unknown job {job_id!r}")
            if status.state == "queued":
                status = replace(status, state="cancelled", finished=time.time())
                self._jobs[job_id] = status
                self._save(status)
            elif status.state == "running":
                self._contexts[job_id]._cancel.set()
            return status

    def delete(self, job_id: str) -> None:
        """Remove a finished job and its folder."""
        with self._lock:
            status = self._jobs.get(job_id)
            if status is None:
                raise InputError("job_id", f"unknown job {job_id!r}")
            if status.state not in FINISHED:
                raise InputError("job_id", f"job {job_id} is {status.state}; cancel it first")
            del self._jobs[job_id]
        shutil.rmtree(self.root / job_id, ignore_errors=True)

    def wait(self, job_id: str, timeout: float | None = None) -> JobStatus:
        """Block until the job has finished (or `timeout` seconds passed); returns its status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.get(job_id)
            if status.state in FINISHED or (deadline is not None and time.monotonic() >= deadline):
                return status
            time.sleep(0.02)

    def close(self) -> None:
        """Stop the worker after the current job (queued jobs stay queued on disk, then read failed)."""
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join()

    # ---- the worker ----

    def _serve(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            self._run(job_id)

    def _run(self, job_id: str) -> None:
        with self._lock:
            status = self._jobs.get(job_id)
            if status is None or status.state != "queued":  # cancelled or deleted while queued
                self._work.pop(job_id, None)
                self._contexts.pop(job_id, None)
                return
            status = replace(status, state="running", started=time.time())
            self._jobs[job_id] = status
            self._save(status)
            work, ctx = self._work.pop(job_id), self._contexts[job_id]
        try:
            result = work(ctx)
            (self.root / job_id / "result.json").write_text(json.dumps(_finite(result), allow_nan=False) + "\n", encoding="utf-8")
            ending = {"state": "done"}
        except Exception as err:  # a job's failure is recorded in its status; the worker goes on
            if ctx.cancelled():
                ending = {"state": "cancelled"}
            else:
                log.exception("job %s failed", job_id)
                ending = {"state": "failed", "error": f"{type(err).__name__}: {err}"}
        with self._lock:
            status = replace(self._jobs[job_id], finished=time.time(), eta_s=None if ending["state"] != "done" else 0.0, **ending)
            self._jobs[job_id] = status
            self._save(status)
            self._contexts.pop(job_id, None)
        log.info("job %s %s", job_id, status.state)

    def _progress(self, job_id: str, step: int, total: int, loss: float | None, tokens_per_s: float | None, phase: str | None) -> None:
        with self._lock:
            status = self._jobs[job_id]
            elapsed = time.time() - (status.started or time.time())
            eta = elapsed / step * (total - step) if step > 0 else None
            status = replace(status, step=step, total=total, loss=loss, tokens_per_s=tokens_per_s, eta_s=eta, phase=phase)
            self._jobs[job_id] = status
            if time.monotonic() - self._saved_at.get(job_id, 0.0) >= SAVE_EVERY_S or step == total:
                self._save(status)

    # ---- files ----

    def _save(self, status: JobStatus) -> None:
        """Write job.json atomically (a reader never sees half a file). Caller holds the lock."""
        folder = self.root / status.id
        tmp = folder / "job.json.tmp"
        tmp.write_text(json.dumps(_finite(asdict(status))) + "\n", encoding="utf-8")
        os.replace(tmp, folder / "job.json")
        self._saved_at[status.id] = time.monotonic()

    def _load(self) -> None:
        for path in sorted(self.root.glob("*/job.json")):
            if not is_id(path.parent.name):
                continue
            try:
                status = JobStatus(**json.loads(path.read_text(encoding="utf-8")))
            except (json.JSONDecodeError, TypeError, UnicodeDecodeError):
                log.warning("skipping unreadable job status %s", path)
                continue
            if status.state not in FINISHED:
                status = replace(status, state="failed", error="interrupted: the process stopped before the job finished", finished=time.time())
                self._save(status)
            self._jobs[status.id] = status


def _finite(payload: Any) -> Any:
    """NaN/inf -> None so status files stay valid JSON (a diverged loss is reported, not kept)."""
    if isinstance(payload, float):
        return payload if payload == payload and abs(payload) != float("inf") else None
    if isinstance(payload, dict):
        return {k: _finite(v) for k, v in payload.items()}
    if isinstance(payload, list):
        return [_finite(v) for v in payload]
    return payload
