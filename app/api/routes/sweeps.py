"""Sweeps: start a grid of fine-tunes on the served model, watch it, read its table and plots.

A sweep runs in a process of its own (`outlier_core.tune.sweep.runner`), which starts each
trial as a run process, so the API holds no training tensors and a restart of the API does
not stop a sweep. Sweeps live in one SQLite file under runs_dir/sweeps/. A sweep is known
by its configuration: POSTing the same one again returns it, and resumes it if its process
died. One sweep runs at a time.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import anyio.to_thread
from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.api.deps import ServiceDep, SettingsDep
from app.api.errors import ApiError
from app.api.routes.jobs import launch_options
from app.api.schemas.common import ERROR_RESPONSES, MODEL_RESPONSES, error
from app.api.schemas.sweeps import MAX_API_TRIALS, SweepIn, SweepsOut
from app.api.settings import Settings
from app.api.task_uploads import upload_path
from outlier_core.errors import InputError
from outlier_core.load.models import LoadedModel, dtype_name
from outlier_core.tune.sweep.config import RuleSetting, SweepConfig, plan_trials, sweep_id
from outlier_core.tune.sweep.report import SweepReport, brief, report, result_file, sweep_state
from outlier_core.tune.sweep.runner import driver_alive, launch_driver
from outlier_core.tune.sweep.store import SweepStore
from outlier_core.tune.task_data import BUNDLED_TASKS
from outlier_core.tune.train_data import TrainConfig

router = APIRouter(tags=["sweeps"])

NOT_FOUND = error(404, "no such sweep")
SWEEP_ID = re.compile(r"sweep-[0-9a-f]{12}")
MEDIA = {"csv": "text/csv", "json": "application/json", "md": "text/markdown", "png": "image/png", "svg": "image/svg+xml"}


def store_for(settings: Settings) -> SweepStore:
    return SweepStore(settings.runs_dir / "sweeps")


def sweep_config(model: LoadedModel, body: SweepIn, runs_dir: Path) -> SweepConfig:
    """A bundled task is scored by lm-eval too; an upload (its stored file, by absolute path) by held-out loss only."""
    train = TrainConfig(steps=body.steps, lr=body.lr, full_lr=body.full_lr, batch_size=body.batch_size, max_eval_blocks=body.held_out)
    settings = tuple(RuleSetting(tuple(rules), window) for rules in body.rules for window in body.windows)
    bundled = body.data in BUNDLED_TASKS
    data = body.data if bundled else str(upload_path(runs_dir, body.data).resolve())
    config = SweepConfig(
        model=model.name, budgets=tuple(body.budgets), methods=tuple(body.methods), seeds=tuple(body.seeds), settings=settings, train=train,
        data=data, eval_tasks=(body.data,) if bundled else (), eval_limit=body.eval_limit, device=model.device, dtype=dtype_name(model.dtype),
    )
    n = len(body.budgets) * len(body.methods) * len(body.seeds) * len(settings)
    if n > MAX_API_TRIALS:
        raise InputError("budgets", f"the grid has {n} trials; a sweep over the API takes at most {MAX_API_TRIALS} (the CLI takes more)")
    return config


def _start(store: SweepStore, config: SweepConfig, settings: Settings) -> SweepReport:
    sid = sweep_id(config)
    busy = [s for s in store.sweeps() if s.id != sid and driver_alive(s.pid, s.pid_started)]
    if busy:
        raise ApiError(409, f"sweep {busy[0].id} is running; one sweep runs at a time", "budgets")
    store.register(sid, config, plan_trials(config))
    if sweep_state(store.sweep(sid)) not in ("running", "done"):  # new, or left failed, cancelled or interrupted: (re)start it
        driver = launch_driver(store.root, sid, launch_options(settings))
        store.set_sweep(sid, "running", driver.pid, driver.create_time())
    return report(store, sid)


def _checked_id(sweep_id: str) -> str:
    if not SWEEP_ID.fullmatch(sweep_id):
        raise ApiError(404, f"sweep_id: no sweep {sweep_id[:40]!r}", "sweep_id")
    return sweep_id


async def _report(store: SweepStore, sid: str) -> SweepReport:
    try:
        return await anyio.to_thread.run_sync(report, store, _checked_id(sid))
    except InputError as err:
        raise ApiError(404, f"sweep_id: {err.reason}", "sweep_id") from err


@router.post("/sweeps", response_model=SweepReport, status_code=202, responses=MODEL_RESPONSES | error(409, "another sweep is running"))
async def start_sweep(body: SweepIn, service: ServiceDep, settings: SettingsDep) -> SweepReport:
    """Start a sweep on the served model (or return the same one, resuming it if its process died);
    poll GET /api/sweeps/{id}."""
    config = sweep_config(service.current(), body, settings.runs_dir)
    return await anyio.to_thread.run_sync(_start, store_for(settings), config, settings)


@router.get("/sweeps", response_model=SweepsOut, responses=ERROR_RESPONSES)
async def list_sweeps(settings: SettingsDep) -> dict:
    store = store_for(settings)
    return {"sweeps": await anyio.to_thread.run_sync(lambda: [brief(store, record) for record in store.sweeps()])}


@router.get("/sweeps/{sweep_id}", response_model=SweepReport, responses=ERROR_RESPONSES | NOT_FOUND)
async def sweep_status(sweep_id: str, settings: SettingsDep) -> SweepReport:
    """Each trial (live progress while it runs), the summary over seeds so far, the Pareto points."""
    return await _report(store_for(settings), sweep_id)


@router.post("/sweeps/{sweep_id}/cancel", response_model=SweepReport, responses=ERROR_RESPONSES | NOT_FOUND)
async def cancel_sweep(sweep_id: str, settings: SettingsDep) -> SweepReport:
    """Ask the sweep's process to stop: the running trial is asked to stop at its next step, no
    further trial starts. Finished trials stay; POST the sweep again to resume it."""
    store = store_for(settings)
    current = await _report(store, sweep_id)
    record = store.sweep(current.id)
    if driver_alive(record.pid, record.pid_started):
        os.kill(record.pid, signal.SIGTERM)
    return await _report(store, sweep_id)


@router.get("/sweeps/{sweep_id}/files/{name}", response_class=FileResponse, responses=ERROR_RESPONSES | NOT_FOUND)
async def sweep_file(sweep_id: str, name: str, settings: SettingsDep) -> FileResponse:
    """A written table (summary.csv, .json, .md) or Pareto plot (pareto_trainable.png, .svg, ...)."""
    store = store_for(settings)
    try:
        path = await anyio.to_thread.run_sync(result_file, store, _checked_id(sweep_id), name)
    except InputError as err:
        raise ApiError(404, f"{err.field}: {err.reason}", err.field) from err
    return FileResponse(path, media_type=MEDIA[path.suffix.lstrip(".")], filename=path.name)
