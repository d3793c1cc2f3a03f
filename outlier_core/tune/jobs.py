"""Long work off the request path: a queue, up to N jobs at once, progress, cancel, files on disk.

A job is a function `work(ctx) -> dict`, run on a thread of its own once one of the
`max_running` slots is free (a fine-tune's work starts a run process and follows it:
`run_process.run_job`). It reports progress through `ctx.report(...)` and checks
`ctx.cancelled()` at each step. How it ends:

- it returns: `done`, and what it returned is written to `result.json`;
- it raises `JobStopped`, or anything after its cancel was asked for: `cancelled`;
- it raises `JobFailed`: `failed` with that message as it is; anything else: `failed`
  with the exception's type and message; the runner goes on with the next job;
- it raises `JobDetached` (the runner closed with `keep_running`): nothing is written,
  the job stays `running` on disk for the next runner to find.

Each job owns a folder `ROOT/<job id>/`: `job.json` (its status, rewritten atomically as it
runs), `result.json` and whatever the work writes there, so a status survives a page reload
and a restart. A new runner hands each job still `queued` or `running` on disk to `resume`:
a running one's run may still be alive, or may have finished meanwhile, and it takes a slot
at once; queued ones wait again, in the order they were submitted, for a free slot (what
they need was written to their folder at submit, by `prepare`). The ones it cannot resume
read `failed`, with resume's reason (`JobFailed`) when it gave one. One runner per runs
directory.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import ConfigDict

from outlier_core.contract import finite, write_atomic
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
    error: str | None = None  # why it failed, or why it was cancelled when the user did not ask (a shutdown)
    created: float = 0.0  # Unix times
    started: float | None = None
    finished: float | None = None
    params: dict | None = None  # what the job was asked to do, as given at submit
    pid: int | None = None  # the job's run process while it runs (never the server's own)

    # every field is always written, defaults included: the API's docs list them all as present
    __pydantic_config__ = ConfigDict(json_schema_serialization_defaults_required=True)


class JobStopped(Exception):
    """Raised by work that ended cancelled; its message, if any, says why."""


class JobFailed(Exception):
    """Raised by work whose failure is worded for people already: the status shows it as it is."""


class JobDetached(Exception):
    """Raised by work that stopped following a run which goes on (the runner closed with `keep_running`)."""


class JobsBusy(Exception):
    """The runner holds as many jobs as its limits allow; try again when one has finished."""


class JobContext:
    """What a running job sees: its folder, a progress reporter, the cancel flag, its process."""

    def __init__(self, runner: JobRunner, job_id: str, folder: Path):
        self._runner = runner
        self.id = job_id
        self.folder = folder
        self._cancel = threading.Event()
        self.cancel_reason: str | None = None

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def detached(self) -> bool:
        """The runner is closing and leaves running work alone: stop following it."""
        return self._runner._detaching.is_set()

    def report(self, step: int, total: int, loss: float | None = None, tokens_per_s: float | None = None, phase: str | None = None) -> None:
        self._runner._progress(self.id, step, total, loss, tokens_per_s, phase)

    def set_pid(self, pid: int | None) -> None:
        self._runner._set(self.id, pid=pid)

    def cancel(self, reason: str | None = None) -> None:
        self.cancel_reason = reason
        self._cancel.set()


class JobRunner:
    def __init__(
        self,
        root: str | Path,
        max_running: int = 1,
        max_queued: int | None = None,
        resume: Callable[[JobStatus, Path], Callable[[JobContext], dict] | None] | None = None,
    ):
        """`max_queued`: jobs waiting for a slot beyond the running ones (None: no limit).
        `resume`: gives the work that picks up a job a previous runner left unfinished, or None."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_running, self.max_queued = max_running, max_queued
        self._lock = threading.Condition()
        self._jobs: dict[str, JobStatus] = {}
        self._work: dict[str, Callable[[JobContext], dict]] = {}
        self._contexts: dict[str, JobContext] = {}
        self._saved_at: dict[str, float] = {}
        self._waiting: deque[str] = deque()
        self._threads: list[threading.Thread] = []
        self._running = 0
        self._closing = False
        self._detaching = threading.Event()
        self._dispatcher: threading.Thread | None = None
        self._load(resume)

    # ---- public ----

    def submit(
        self, kind: str, work: Callable[[JobContext], dict], params: dict | None = None, prepare: Callable[[Path], None] | None = None,
    ) -> JobStatus:
        """Queue `work`; JobsBusy when `max_running + max_queued` jobs are queued or running already.
        `prepare(folder)` writes what the job needs into its folder before it reads queued on
        disk, so that a restarted runner can still start it."""
        with self._lock:
            if self.max_queued is not None and self._running + len(self._waiting) >= self.max_running + self.max_queued:
                raise JobsBusy(f"{self._running} jobs are running and {len(self._waiting)} are queued, the most this server takes; try again later")
            job_id = new_id()
            while (self.root / job_id).exists():
                job_id = new_id()
            status = JobStatus(job_id, kind, "queued", created=time.time(), params=params)
            (self.root / job_id).mkdir()
            if prepare is not None:
                try:
                    prepare(self.root / job_id)
                except BaseException:
                    shutil.rmtree(self.root / job_id, ignore_errors=True)
                    raise
            self._jobs[job_id] = status
            self._work[job_id] = work
            self._contexts[job_id] = JobContext(self, job_id, self.root / job_id)
            self._save(status)
            self._waiting.append(job_id)
            self._start_dispatcher()
            self._lock.notify_all()
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
        status = self.get(job_id)
        path = self.root / job_id / "result.json"
        return json.loads(path.read_text(encoding="utf-8")) if status.state == "done" and path.is_file() else None

    def folder(self, job_id: str) -> Path:
        self.get(job_id)
        return self.root / job_id

    def cancel(self, job_id: str, reason: str | None = None) -> JobStatus:
        """Queued: cancelled at once. Running: stops at its next step. Finished: unchanged.
        `reason` is recorded in the status when the user did not ask for it (a shutdown)."""
        with self._lock:
            status = self._jobs.get(job_id)
            if status is None:
                raise InputError("job_id", f"unknown job {job_id!r}")
            if status.state == "queued":
                status = replace(status, state="cancelled", finished=time.time(), error=reason)
                self._jobs[job_id] = status
                self._save(status)
            elif status.state == "running":
                self._contexts[job_id].cancel(reason)
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

    def close(self, cancel_reason: str | None = None, keep_running: bool = False) -> None:
        """Stop taking jobs and wait for the running ones to end: cancelled with `cancel_reason`
        when one is given (queued ones too), or left running for the next runner to find
        (`keep_running`: their work stops following them; queued ones stay queued)."""
        with self._lock:
            self._closing = True
            if keep_running:
                self._detaching.set()
            pending = [s.id for s in self._jobs.values() if s.state not in FINISHED]
            self._lock.notify_all()
        if cancel_reason is not None and not keep_running:
            for job_id in pending:
                self.cancel(job_id, cancel_reason)
        for thread in [self._dispatcher, *self._threads]:
            if thread is not None:
                thread.join()

    # ---- running ----

    def _start_dispatcher(self) -> None:
        """Caller holds the lock."""
        if self._dispatcher is None or not self._dispatcher.is_alive():
            self._dispatcher = threading.Thread(target=self._dispatch, name="outlier-lab-jobs", daemon=True)
            self._dispatcher.start()

    def _dispatch(self) -> None:
        """Start queued jobs in order, as slots free up."""
        with self._lock:
            while True:
                while not self._closing and not (self._waiting and self._running < self.max_running):
                    self._lock.wait()
                if self._closing:
                    return
                job_id = self._waiting.popleft()
                if self._jobs.get(job_id, None) is None or self._jobs[job_id].state != "queued":  # cancelled or deleted while queued
                    self._work.pop(job_id, None)
                    self._contexts.pop(job_id, None)
                    continue
                self._begin(job_id, self._work.pop(job_id))

    def _begin(self, job_id: str, work: Callable[[JobContext], dict]) -> None:
        """Caller holds the lock: the job takes a slot and its own thread, and reads running from
        now on (a cancel from here on reaches its work, which never starts if asked in time)."""
        status = self._jobs[job_id]
        if status.state == "queued":
            self._jobs[job_id] = status = replace(status, state="running", started=time.time())
            self._save(status)
        self._running += 1
        thread = threading.Thread(target=self._run, args=(job_id, work), name=f"job-{job_id}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _run(self, job_id: str, work: Callable[[JobContext], dict]) -> None:
        with self._lock:
            ctx = self._contexts[job_id]
        ending: dict[str, Any] | None
        try:
            if ctx.cancelled():
                raise JobStopped()
            result = work(ctx)
            write_atomic(self.root / job_id / "result.json", json.dumps(finite(result), allow_nan=False) + "\n")
            ending = {"state": "done"}
        except JobDetached:
            ending = None
        except Exception as err:  # a job's failure is recorded in its status; the runner goes on
            if isinstance(err, JobStopped) or ctx.cancelled():
                ending = {"state": "cancelled", "error": ctx.cancel_reason or (str(err) if isinstance(err, JobStopped) and str(err) else None)}
            elif isinstance(err, JobFailed):
                ending = {"state": "failed", "error": str(err)}
            else:
                log.exception("job %s failed", job_id)
                ending = {"state": "failed", "error": f"{type(err).__name__}: {err}"}
        with self._lock:
            self._running -= 1
            self._contexts.pop(job_id, None)
            if ending is not None:
                status = replace(self._jobs[job_id], finished=time.time(), pid=None, eta_s=None if ending["state"] != "done" else 0.0, **ending)
                self._jobs[job_id] = status
                self._save(status)
                log.info("job %s %s", job_id, status.state)
            self._lock.notify_all()

    def _progress(self, job_id: str, step: int, total: int, loss: float | None, tokens_per_s: float | None, phase: str | None) -> None:
        with self._lock:
            status = self._jobs[job_id]
            elapsed = time.time() - (status.started or time.time())
            eta = elapsed / step * (total - step) if step > 0 else None
            status = replace(status, step=step, total=total, loss=loss, tokens_per_s=tokens_per_s, eta_s=eta, phase=phase)
            self._jobs[job_id] = status
            if time.monotonic() - self._saved_at.get(job_id, 0.0) >= SAVE_EVERY_S or step == total:
                self._save(status)

    def _set(self, job_id: str, **changes: Any) -> None:
        with self._lock:
            status = replace(self._jobs[job_id], **changes)
            self._jobs[job_id] = status
            self._save(status)

    # ---- files ----

    def _save(self, status: JobStatus) -> None:
        """Write job.json atomically (a reader never sees half a file). Caller holds the lock."""
        write_atomic(self.root / status.id / "job.json", json.dumps(finite(asdict(status))) + "\n")
        self._saved_at[status.id] = time.monotonic()

    def _load(self, resume: Callable[[JobStatus, Path], Callable[[JobContext], dict] | None] | None) -> None:
        queued: list[tuple[JobStatus, Callable[[JobContext], dict]]] = []
        for path in sorted(self.root.glob("*/job.json")):
            if not is_id(path.parent.name):
                continue
            try:
                status = JobStatus(**json.loads(path.read_text(encoding="utf-8")))
            except (json.JSONDecodeError, TypeError, UnicodeDecodeError):
                log.warning("skipping unreadable job status %s", path)
                continue
            self._jobs[status.id] = status
            if status.state in FINISHED:
                continue
            try:
                work = resume(status, path.parent) if resume is not None else None
                error = "interrupted: the process stopped before the job finished"
            except JobFailed as err:
                work, error = None, str(err)
            if work is None:
                status = replace(status, state="failed", pid=None, error=error, finished=time.time())
                self._jobs[status.id] = status
                self._save(status)
                continue
            self._contexts[status.id] = JobContext(self, status.id, path.parent)
            if status.state == "queued":
                queued.append((status, work))
                continue
            with self._lock:  # its run may be alive: it takes a slot now, whatever the limit
                self._jobs[status.id] = replace(status, state="running", started=status.started or time.time())
                self._begin(status.id, work)
        with self._lock:  # the queue as it was: oldest first, each started when a slot frees
            for status, work in sorted(queued, key=lambda item: (item[0].created, item[0].id)):
                self._work[status.id] = work
                self._waiting.append(status.id)
                log.info("job %s (%s) queued again after a restart", status.id, status.kind)
            if queued:
                self._start_dispatcher()
                self._lock.notify_all()
