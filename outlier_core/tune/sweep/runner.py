"""Run a sweep: every trial not yet done, each as its own run process, its end committed
to the store as it comes; then the summary, the tables and the Pareto figures.

    outcome = run_sweep(ROOT, SweepConfig(...))                   # here, trial after trial
    python -m outlier_core.tune.sweep.runner --root ROOT --sweep ID   # a registered sweep, as a process

Resuming is running it again. A done trial is never rerun (it comes back `reused`). A
trial the store says is running belonged to a sweep process that died: its run process
lives in a session of its own and may have gone on, so it is followed again if it still
runs, taken as it is if it finished, and only started afresh (its folder cleared) if it
died too. Failed and cancelled trials are started again.

Trials run one after another here, `concurrent` at a time in threads, or each as a Ray task
through `tune.executor` when a Ray address is given (a Ray-run trial is not reattached
after its sweep dies: it is started again). On a box of GPUs a sweep on `cuda` (or on the
default device) runs one trial per GPU by default, each worker holding its own `cuda:i`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import psutil
import torch

from outlier_core.contract import to_json, write_atomic
from outlier_core.tune.run_config import RunConfig
from outlier_core.tune.run_process import LaunchOptions, RunProcess, follow
from outlier_core.tune.run_status import RunStatus, read_result, read_status
from outlier_core.tune.sweep.config import SweepConfig, Trial, plan_trials, sweep_id
from outlier_core.tune.sweep.results import COSTS, SummaryRow, headline_metric, summarise, summary_csv, summary_markdown, trial_metrics
from outlier_core.tune.sweep.store import SweepStore, TrialRecord

log = logging.getLogger(__name__)

DRIVER_LOG = "sweep.log"


@dataclass(frozen=True)
class TrialProgress:
    """A running trial's last status, as its run process wrote it."""

    step: int
    total: int
    loss: float | None = None
    phase: str | None = None


@dataclass(frozen=True)
class TrialView:
    """A trial as the sweep's JSON shows it."""

    method: str
    budget: int
    seed: int
    setting: str
    trainable: int | None
    state: str
    reused: bool  # done before this run of the sweep began: nothing trained for it now
    metrics: dict[str, float]
    key: str
    folder: str
    launches: int
    error: str | None = None
    progress: TrialProgress | None = None  # while it runs


@dataclass(frozen=True)
class SweepOutcome:
    sweep: str
    state: str
    trials: list[TrialView]
    summary: list[SummaryRow]
    files: dict[str, str] = field(default_factory=dict)  # what was written -> its path


def trial_view(record: TrialRecord, reused: bool, progress: TrialProgress | None = None) -> TrialView:
    return TrialView(
        record.method, record.budget, record.seed, record.setting, record.trainable, record.state, reused, record.metrics,
        record.key, record.folder, record.launches, record.error, progress,
    )


def run_sweep(
    root: str | Path,
    sweep: SweepConfig,
    options: LaunchOptions = LaunchOptions(),
    concurrent: int | None = None,
    ray_address: str | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    report: Callable[[TrialRecord], None] = lambda record: None,
    plots: bool = True,
) -> SweepOutcome:
    """Register `sweep` in the store at `root`, run what is not done, write the results.
    `concurrent` trials at a time (default: one per GPU on a GPU sweep, else one)."""
    store = SweepStore(root)
    sid = sweep_id(sweep)
    trials = plan_trials(sweep)
    store.register(sid, sweep, trials)
    done_before = {record.key for record in store.trials(sid) if record.state == "done"}
    me = psutil.Process()
    store.set_sweep(sid, "running", me.pid, me.create_time())
    todo = [trial for trial in trials if trial.key not in done_before]
    log.info("sweep %s: %d trials, %d done before, %d to run", sid, len(trials), len(done_before), len(todo))

    gpus = torch.cuda.device_count()
    concurrent = concurrent or default_concurrent(sweep.device, gpus)
    devices: queue.Queue[str | None] = queue.Queue()
    for device in trial_devices(sweep.device, concurrent, gpus):
        devices.put(device)

    def one(trial: Trial) -> None:
        if should_stop():
            return
        device = devices.get()  # this worker's device, given back for the next trial
        try:
            report(run_trial(store, trial, options, ray_address, should_stop, device))
        finally:
            devices.put(device)

    try:
        if concurrent > 1:
            with ThreadPoolExecutor(max_workers=concurrent, thread_name_prefix="trial") as pool:
                list(pool.map(one, todo))
        else:
            for trial in todo:
                one(trial)
    except BaseException:
        store.set_sweep(sid, "failed")
        raise
    records = store.trials(sid)
    state = "done" if all(r.state == "done" for r in records) else "cancelled" if should_stop() else "failed"
    summary = summarise(records)
    try:
        files = write_results(store, sid, summary, plots)
    finally:
        store.set_sweep(sid, state)  # after the files: a sweep that reads done has its tables
    return SweepOutcome(sid, state, [trial_view(r, r.key in done_before) for r in records], summary, files)


def default_concurrent(device: str | None, gpus: int) -> int:
    """Trials at a time when none is asked: one per GPU for a sweep on `cuda` or the default device on a GPU box, else one."""
    return gpus if gpus and device in (None, "cuda") else 1


def trial_devices(device: str | None, concurrent: int, gpus: int) -> list[str | None]:
    """The device each of `concurrent` trial workers runs on: a sweep on `cuda` (or the default
    device) on a box of `gpus` GPUs spreads them over cuda:0..gpus-1, round robin; any other
    device (cpu, a pinned cuda:K) is every worker's, and None leaves the trial's config as it is."""
    if gpus and device in (None, "cuda"):
        return [f"cuda:{i % gpus}" for i in range(concurrent)]
    return [None] * concurrent


def run_trial(
    store: SweepStore, trial: Trial, options: LaunchOptions, ray_address: str | None, should_stop: Callable[[], bool], device: str | None = None,
) -> TrialRecord:
    """One trial to its end, its state and metrics committed in one transaction; on `device`
    when given (a Ray trial goes where Ray places it)."""
    folder = store.root / store.trial(trial.key).folder
    final = _left_running(store, trial, folder, options, should_stop)
    if final is None:
        shutil.rmtree(folder, ignore_errors=True)  # what a dead run left: status, log, half-written files
        store.start_trial(trial.key)
        log.info("trial %s: %s at budget %d, seed %d (%s)", trial.key[:10], trial.method, trial.budget, trial.seed, trial.setting)
        config = trial.config if device is None or ray_address is not None else replace(trial.config, device=device)
        final = _launch(config, folder, options, ray_address, should_stop)
    result = read_result(folder) if final.state == "done" else None
    if result is None:
        error = final.error if final.state != "done" else "the run reported done but wrote no result.json"
        store.finish_trial(trial.key, "failed" if final.state == "done" else final.state, error=error)
    else:
        trainable, metrics = trial_metrics(result)
        store.finish_trial(trial.key, "done", trainable, metrics)
    return store.trial(trial.key)


def _left_running(store: SweepStore, trial: Trial, folder: Path, options: LaunchOptions, should_stop: Callable[[], bool]) -> RunStatus | None:
    """How a trial that an earlier sweep process left running ended: followed to its end if
    its run process still runs, as it stands if it finished; None when it must run again."""
    if store.trial(trial.key).state != "running":
        return None
    process = RunProcess.adopt(folder)
    if process is not None:
        log.info("trial %s: its run process (pid %d) outlived the sweep that started it; following it", trial.key[:10], process.pid)
        return follow(process, lambda status: None, should_stop, cancel_timeout_s=options.cancel_timeout_s)
    status = read_status(folder)
    return status if status is not None and status.state == "done" else None


def _launch(config: RunConfig, folder: Path, options: LaunchOptions, ray_address: str | None, should_stop: Callable[[], bool]) -> RunStatus:
    if ray_address is not None:
        from outlier_core.tune.executor import run_many

        outcome = run_many([(config, folder)], ray_address=ray_address, options=options)[0]
        return RunStatus(outcome.state, error=outcome.error)
    return follow(RunProcess.launch(folder, config, options), lambda status: None, should_stop, cancel_timeout_s=options.cancel_timeout_s)


def results_folder(store: SweepStore, sid: str) -> Path:
    return store.root / sid


def write_results(store: SweepStore, sid: str, summary: list[SummaryRow], plots: bool = True) -> dict[str, str]:
    """ROOT/<sweep>/summary.csv|.json|.md, and the Pareto figures as PNG and SVG: the headline
    metric (pareto_<cost>) and the held-out loss (pareto_loss_<cost>) against each cost."""
    folder = results_folder(store, sid)
    folder.mkdir(parents=True, exist_ok=True)
    records = store.trials(sid)
    payload = {"sweep": sid, "trials": to_json([trial_view(r, False) for r in records]), "summary": to_json(summary)}
    written = {"csv": folder / "summary.csv", "json": folder / "summary.json", "markdown": folder / "summary.md"}
    write_atomic(written["csv"], summary_csv(summary))
    write_atomic(written["json"], json.dumps(payload, indent=1, allow_nan=False) + "\n")
    write_atomic(written["markdown"], summary_markdown(summary))
    if plots and summary:
        from outlier_core.tune.sweep.plots import export_figures, pareto_figure

        metric = headline_metric(summary)
        figures = {f"pareto_{cost}": pareto_figure(summary, metric, cost) for cost in COSTS}
        if metric != "held_out_loss":
            figures |= {f"pareto_loss_{cost}": pareto_figure(summary, "held_out_loss", cost) for cost in COSTS}
        try:
            for path in export_figures(figures, folder):
                written[path.name] = path
        except Exception as err:  # kaleido needs a Chromium; without one the tables still stand
            log.warning("the Pareto plots were not exported (%s: %s); the tables were", type(err).__name__, err)
    return {name: str(path) for name, path in written.items()}


# ---- a registered sweep as a process of its own (what the API starts) ----


def launch_driver(root: str | Path, sid: str, options: LaunchOptions = LaunchOptions()) -> psutil.Process:
    """Start `python -m outlier_core.tune.sweep.runner` for a registered sweep, in a session of
    its own (it outlives whoever started it). Its log: ROOT/<sweep>/sweep.log."""
    folder = Path(root) / sid
    folder.mkdir(parents=True, exist_ok=True)
    command = [options.python, "-m", "outlier_core.tune.sweep.runner", "--root", str(Path(root).resolve()), "--sweep", sid]
    command += ["--cancel-timeout-s", str(options.cancel_timeout_s)] + (["--memory-mb", str(options.memory_mb)] if options.memory_mb else [])
    with open(folder / DRIVER_LOG, "ab") as out:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return psutil.Process(process.pid)


def driver_alive(pid: int | None, started: float | None) -> bool:
    """Whether the process recorded as driving a sweep still runs (not a later one with its pid)."""
    if pid is None or started is None:
        return False
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and abs(process.create_time() - started) <= 0.05
    except psutil.Error:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m outlier_core.tune.sweep.runner", description="Run (or resume) a sweep registered in a store.")
    parser.add_argument("--root", required=True, help="the store's folder (sweeps.sqlite)")
    parser.add_argument("--sweep", required=True, help="the sweep's id")
    parser.add_argument("--concurrent", type=int, default=None, help="trials at a time (default: one per GPU on a GPU sweep, else one)")
    parser.add_argument("--memory-mb", type=int, default=None, help="address-space cap of each CPU trial process")
    parser.add_argument("--cancel-timeout-s", type=float, default=30.0, help="after SIGTERM, how long a trial may take to stop")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    config = SweepStore(args.root).sweep(args.sweep).config
    options = LaunchOptions(memory_mb=args.memory_mb, cancel_timeout_s=args.cancel_timeout_s)
    outcome = run_sweep(args.root, config, options, concurrent=args.concurrent, should_stop=stop.is_set)
    log.info("sweep %s %s", outcome.sweep, outcome.state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
