"""Start a run as its own process, follow it through its status file, stop it, or find it again.

The process runs `run_main` (under `torch.distributed.run` for N processes), in a session of
its own (its process group is the run: a cancel or a kill reaches every rank), with its
output in FOLDER/run.log. Whoever follows it (the API's job runner, the CLI, a sweep)
reads FOLDER/status.json; what the process died of, when it could not say so itself
(SIGKILL, a segfault, the memory cap), comes from its exit and the end of its log.

FOLDER/process.json records the main process's pid and start time, so a restarted server
tells a run that is still alive from a new process that reuses its pid.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import psutil

from outlier_core.contract import write_atomic
from outlier_core.errors import InputError
from outlier_core.load.models import default_device
from outlier_core.tune.jobs import JobContext, JobDetached, JobFailed, JobStatus, JobStopped
from outlier_core.tune.run_config import CONFIG_FILE, RunConfig, check_inputs, read_config, write_config
from outlier_core.tune.run_status import LOG_FILE, MEMORY_ENV, MEMORY_SIGNS, RunStatus, log_tail, memory_cap_message, read_result, read_status

log = logging.getLogger(__name__)

PROCESS_FILE = "process.json"
POLL_S = 0.1


@dataclass(frozen=True)
class LaunchOptions:
    memory_mb: int | None = None  # RLIMIT_AS of each run process (CPU runs: CUDA maps far more address space than it uses)
    cancel_timeout_s: float = 30.0  # after SIGTERM, how long a run may take to stop before SIGKILL
    python: str = sys.executable


def run_command(config: RunConfig, config_path: Path, python: str = sys.executable) -> list[str]:
    entry = ["-m", "outlier_core.tune.run_main", "--config", str(config_path)]
    if config.processes == 1:
        return [python, *entry]
    return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={config.processes}", *entry]


class RunProcess:
    """A run's main process: one this process started (`launch`) or found again (`adopt`)."""

    def __init__(self, folder: Path, pid: int, started: float, popen: subprocess.Popen | None = None):
        self.folder, self.pid, self.started, self._popen = folder, pid, started, popen

    @classmethod
    def launch(cls, folder: str | Path, config: RunConfig, options: LaunchOptions = LaunchOptions()) -> RunProcess:
        """Write the config into `folder` and start its run."""
        folder = Path(folder)
        config_path = write_config(folder, config)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop(MEMORY_ENV, None)
        capped = options.memory_mb is not None and not (config.device or default_device()).startswith("cuda")
        if capped:
            env[MEMORY_ENV] = str(options.memory_mb)
        with open(folder / LOG_FILE, "ab") as out:
            popen = subprocess.Popen(
                run_command(config, config_path.resolve(), options.python),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True, close_fds=True,
            )
        started = _start_time(popen.pid) or time.time()
        record = {"pid": popen.pid, "started": started, "memory_mb": options.memory_mb if capped else None, "command": popen.args}
        write_atomic(folder / PROCESS_FILE, json.dumps(record) + "\n")
        log.info("run %s started: pid %d", folder.name, popen.pid)
        return cls(folder, popen.pid, started, popen)

    @classmethod
    def adopt(cls, folder: str | Path) -> RunProcess | None:
        """The run recorded in `folder`, if its process is still the one that was started."""
        folder = Path(folder)
        try:
            record = json.loads((folder / PROCESS_FILE).read_text(encoding="utf-8"))
            pid, started = int(record["pid"]), float(record["started"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        now = _start_time(pid)
        if now is None or abs(now - started) > 0.05:
            return None
        return cls(folder, pid, started)

    def running(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is None
        started = _start_time(self.pid)
        return started is not None and abs(started - self.started) <= 0.05

    @property
    def returncode(self) -> int | None:
        """The exit status of a process this one started; None while it runs or for an adopted one."""
        return self._popen.poll() if self._popen is not None else None

    def signal(self, sig: int) -> None:
        """To the run's whole process group (every rank), if any of it is left."""
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)
        return True


def _start_time(pid: int) -> float | None:
    """When `pid` started, or None when no such process lives (a zombie counts as gone)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.create_time()
    except psutil.Error:
        return None


def follow(
    run: RunProcess,
    report: Callable[[RunStatus], None],
    cancelled: Callable[[], bool] = lambda: False,
    detached: Callable[[], bool] = lambda: False,
    cancel_timeout_s: float = 30.0,
) -> RunStatus | None:
    """Pass each new status to `report` until the run ends; returns how it ended (None when
    `detached()` asked to stop following a run that goes on). A cancel sends SIGTERM to the
    run, then SIGKILL after `cancel_timeout_s`."""
    seen = 0.0
    kill_at = None
    while run.running():
        if detached():
            return None
        status = read_status(run.folder)
        if status is not None and status.updated != seen:
            seen = status.updated
            report(status)
        if cancelled() and kill_at is None:
            log.info("run %s: asking it to stop (SIGTERM)", run.folder.name)
            run.signal(signal.SIGTERM)
            kill_at = time.monotonic() + cancel_timeout_s
        if kill_at is not None and time.monotonic() >= kill_at:
            log.warning("run %s did not stop within %.0f s: SIGKILL", run.folder.name, cancel_timeout_s)
            run.signal(signal.SIGKILL)
            kill_at = float("inf")
        time.sleep(POLL_S)
    run.signal(signal.SIGKILL)  # ranks left behind by a launcher that died
    last = read_status(run.folder)
    if last is not None and last.updated != seen:
        report(last)
    killed = kill_at == float("inf")
    return ending(run.folder, run.returncode, asked_to_stop=kill_at is not None, killed=killed)


def ending(folder: Path, returncode: int | None, asked_to_stop: bool = False, killed: bool = False) -> RunStatus:
    """How a run that is no longer running ended: its own last word when it had one, else
    what its exit and its log say (a run asked to stop before it could say so was cancelled)."""
    status = read_status(folder) or RunStatus("running")
    if status.ended:
        return status
    if asked_to_stop:
        return replace(status, state="cancelled", error="it did not stop in time and was killed" if killed else None)
    return replace(status, state="failed", error=death_message(folder, returncode))


def death_message(folder: Path, returncode: int | None) -> str:
    """Why a run died without saying so, and the end of its log."""
    tail = log_tail(folder)
    memory = _launched_cap(folder)
    if memory and any(sign in tail for sign in MEMORY_SIGNS):
        cause = memory_cap_message(int(memory))
    elif returncode is None:
        cause = "the run process is gone and left no final status"
    elif returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else f"signal {-returncode}"
        cause = f"the run process was killed by {name}"
        if returncode == -signal.SIGKILL:
            cause += " (the kernel's out-of-memory killer does this too)"
    else:
        cause = f"the run process exited with status {returncode}"
    return f"{cause}; the end of its log:\n{tail}" if tail else cause


def _launched_cap(folder: Path) -> int | None:
    """The memory cap a run was started with, from the launcher's record."""
    try:
        return json.loads((folder / PROCESS_FILE).read_text(encoding="utf-8")).get("memory_mb")
    except (OSError, ValueError):
        return None


# ---- as a job of `jobs.JobRunner` ----


def run_job(config: RunConfig, options: LaunchOptions = LaunchOptions(), files: dict[str, bytes] | None = None) -> Callable[[JobContext], dict]:
    """A `work(ctx)` that runs `config` as a process in the job's folder (`files` written there
    first, e.g. the mask the config names) and returns its result."""

    def work(ctx: JobContext) -> dict:
        prepare_run(config, files)(ctx.folder)
        return start_job(config, ctx, options)

    return work


def prepare_run(config: RunConfig, files: dict[str, bytes] | None = None) -> Callable[[Path], None]:
    """For `JobRunner.submit(prepare=...)`: the config and `files` in the job's folder while it
    is queued, so a server restarted before the job started can still start it."""

    def prepare(folder: Path) -> None:
        for name, content in (files or {}).items():
            if not (folder / name).is_file():
                write_atomic(folder / name, content)
        write_config(folder, config)

    return prepare


def start_job(config: RunConfig, ctx: JobContext, options: LaunchOptions) -> dict:
    ctx.report(0, config.train.steps * (1 + len(config.baselines)), phase="starting the run process")
    return follow_job(RunProcess.launch(ctx.folder, config, options), ctx, options)


def follow_job(run: RunProcess, ctx: JobContext, options: LaunchOptions) -> dict:
    ctx.set_pid(run.pid)

    def report(status: RunStatus) -> None:
        if status.total:
            ctx.report(status.step, status.total, status.loss, status.tokens_per_s, status.phase)

    final = follow(run, report, ctx.cancelled, ctx.detached, options.cancel_timeout_s)
    if final is None:
        raise JobDetached()
    return job_ending(run.folder, final)


def job_ending(folder: Path, final: RunStatus) -> dict:
    """A finished run as a job's ending: its result, or the exception that says how it ended."""
    if final.state == "done":
        result = read_result(folder)
        if result is None:
            raise JobFailed("the run reported done but wrote no result.json")
        return result
    if final.state == "cancelled":
        raise JobStopped(final.error) if final.error else JobStopped()
    raise JobFailed(final.error or "the run failed without saying why")


def resume_job(options: LaunchOptions = LaunchOptions()) -> Callable[[JobStatus, Path], Callable[[JobContext], dict] | None]:
    """For `JobRunner(resume=...)`: a job left running by a server that stopped is followed
    again if its run is still alive, or ended as its run ended; a job left queued is started
    from the config written at submit (`prepare_run`) when a slot frees, or fails (JobFailed)
    when what it needs is gone from its folder."""

    def resume(status: JobStatus, folder: Path) -> Callable[[JobContext], dict] | None:
        if status.state == "queued":
            return requeue(folder)
        if not (folder / CONFIG_FILE).is_file() or not (folder / PROCESS_FILE).is_file():
            return None  # never started: nothing to find
        run = RunProcess.adopt(folder)

        def work(ctx: JobContext) -> dict:
            if run is not None:
                log.info("job %s: reattached to its run, pid %d", ctx.id, run.pid)
                return follow_job(run, ctx, options)
            final = read_status(folder)
            if final is None or not final.ended:
                final = RunStatus("failed", error=f"interrupted: the run ended while no server was following it. {death_message(folder, None)}")
            return job_ending(folder, final)

        return work

    def requeue(folder: Path) -> Callable[[JobContext], dict] | None:
        if not (folder / CONFIG_FILE).is_file():
            return None  # queued by a server that wrote nothing at submit
        try:
            config = read_config(folder / CONFIG_FILE)
            check_inputs(config, folder)
        except InputError as err:
            raise JobFailed(f"queued when the server stopped, and cannot start after its restart: {err.field}: {err.reason}") from err
        return lambda ctx: start_job(config, ctx, options)

    return resume
