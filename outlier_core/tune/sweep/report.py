"""What a sweep looks like to someone watching it: its state (a sweep whose driving process
died reads `interrupted`), each trial with the live progress of the ones running, the
summary so far, the Pareto points of its headline metric, and the files written.

Read from the store and the trials' status files only: nothing here loads a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from outlier_core.errors import InputError
from outlier_core.tune.run_status import read_status
from outlier_core.tune.sweep.config import SweepConfig
from outlier_core.tune.sweep.results import COSTS, ParetoPoint, SummaryRow, headline_metric, pareto_points, summarise
from outlier_core.tune.sweep.runner import TrialProgress, TrialView, driver_alive, results_folder, trial_view
from outlier_core.tune.sweep.store import SweepRecord, SweepStore, TrialRecord

RESULT_FILES = (
    "summary.csv", "summary.json", "summary.md",
    *(f"pareto_{which}{cost}.{kind}" for which in ("", "loss_") for cost in COSTS for kind in ("png", "svg")),
)


@dataclass(frozen=True)
class SweepBrief:
    id: str
    state: str  # pending, running, done, failed, cancelled; interrupted: its process is gone, run it again to resume
    model: str
    created: float
    trials: int
    done: int


@dataclass(frozen=True)
class SweepReport(SweepBrief):
    config: SweepConfig
    trial_views: list[TrialView]
    summary: list[SummaryRow]
    metric: str  # the headline metric the Pareto points are drawn for
    pareto: dict[str, list[ParetoPoint]]  # per cost: the points, marked where on the front
    files: list[str]  # what `result_file` serves, once written


def sweep_state(record: SweepRecord) -> str:
    if record.state == "running" and not driver_alive(record.pid, record.pid_started):
        return "interrupted"
    return record.state


def brief(store: SweepStore, record: SweepRecord, trials: list[TrialRecord] | None = None) -> SweepBrief:
    trials = store.trials(record.id) if trials is None else trials
    done = sum(t.state == "done" for t in trials)
    return SweepBrief(record.id, sweep_state(record), record.config.model, record.created, len(trials), done)


def report(store: SweepStore, sid: str) -> SweepReport:
    record = store.sweep(sid)
    trials = store.trials(sid)
    summary = summarise(trials)
    metric = headline_metric(summary)
    views = [trial_view(t, False, _progress(store, t)) for t in trials]
    folder = results_folder(store, sid)
    files = [name for name in RESULT_FILES if (folder / name).is_file()]
    pareto = {cost: pareto_points(summary, metric, cost) for cost in COSTS}
    return SweepReport(**vars(brief(store, record, trials)), config=record.config, trial_views=views, summary=summary, metric=metric, pareto=pareto, files=files)


def result_file(store: SweepStore, sid: str, name: str) -> Path:
    """The path of one of the sweep's written tables or plots; InputError for any other name."""
    store.sweep(sid)
    path = results_folder(store, sid) / name
    if name not in RESULT_FILES or not path.is_file():
        raise InputError("name", f"sweep {sid} has no file {name!r}; it has {', '.join(report(store, sid).files) or 'none yet'}")
    return path


def _progress(store: SweepStore, trial: TrialRecord) -> TrialProgress | None:
    if trial.state != "running":
        return None
    status = read_status(store.root / trial.folder)
    return TrialProgress(status.step, status.total, status.loss, status.phase) if status is not None else None
