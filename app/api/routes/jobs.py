"""Fine-tune jobs: start, status, result, cancel, delete; and the runs on disk.

A job trains on its own copy of the serving model (loaded when the job starts), so the
served model is never changed and keeps answering while the job runs. Status routes are
async and read the runner's memory only: they never wait behind a forward pass.
"""

from __future__ import annotations

import gc
from typing import Callable

import anyio.to_thread
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import JobsDep, MasksDep, ServiceDep, SettingsDep
from app.api.errors import ApiError
from app.api.mask_store import MaskStore
from app.api.schemas.common import ERROR_RESPONSES, MODEL_RESPONSES, error
from app.api.schemas.jobs import FinetuneIn, JobsOut, RunsOut
from app.api.service import load_like
from outlier_core.errors import InputError
from outlier_core.intervene.corpus import bundled, from_text
from outlier_core.load.models import LoadedModel
from outlier_core.tune.comparison import Comparison, ComparisonPlan, plan_comparison, run_job
from outlier_core.tune.jobs import JobContext, JobRunner, JobStatus
from outlier_core.tune.runs import list_runs
from outlier_core.tune.train_data import TrainConfig, make_data

router = APIRouter(tags=["jobs"])

NOT_FOUND = error(404, "no such job")


def _job(runner: JobRunner, job_id: str) -> JobStatus:
    try:
        return runner.get(job_id)
    except InputError as err:
        raise ApiError(404, f"job_id: {err.reason}", "job_id") from err


def _work(model: LoadedModel, plan: ComparisonPlan) -> Callable[[JobContext], dict]:
    """The job: load a copy of the model the request saw, train the checked comparison on it, drop it."""

    def work(ctx: JobContext) -> dict:
        ctx.report(0, plan.total_steps, phase="loading a copy of the model")
        copy = load_like(model)
        try:
            return run_job(copy, plan, ctx)
        finally:
            del copy
            gc.collect()

    return work


def _submit(model: LoadedModel, body: FinetuneIn, store: MaskStore, runner: JobRunner) -> JobStatus:
    mask = store.get(body.mask_id)
    config = TrainConfig(
        steps=body.steps, lr=body.lr, full_lr=body.full_lr, weight_decay=body.weight_decay, batch_size=body.batch_size,
        seq_len=body.seq_len, seed=body.seed, lora_rank=body.lora_rank,
        checkpoint=body.checkpoint,
    )
    corpus = from_text(body.data_text, "your text", "data_text") if body.data_text is not None else bundled(body.data)
    data = make_data(model, corpus, config)  # refuses too little data now, not minutes later in the job
    plan = plan_comparison(model, mask, tuple(body.baselines), data, config, mask_field="mask_id")  # the job does not check again
    params = {**body.model_dump(exclude={"data_text"}), "data": data.source, "mask_name": mask.name, "model": model.name}
    return runner.submit("finetune", _work(model, plan), params)


@router.post("/finetune", response_model=JobStatus, status_code=202, responses=MODEL_RESPONSES | error(404, "no such mask"))
async def start_finetune(body: FinetuneIn, service: ServiceDep, store: MasksDep, runner: JobsDep) -> JobStatus:
    """Queue a fine-tune of the mask's coordinates and the chosen baselines; poll /api/jobs/{id}."""
    store.get(body.mask_id)
    return await service.run(_submit, body, store, runner)


@router.get("/jobs", response_model=JobsOut, responses=ERROR_RESPONSES)
async def list_jobs(runner: JobsDep) -> dict:
    return {"jobs": runner.list()}


@router.get("/jobs/{job_id}", response_model=JobStatus, responses=ERROR_RESPONSES | NOT_FOUND)
async def job_status(job_id: str, runner: JobsDep) -> JobStatus:
    """Progress: step of total, loss, tokens/s, ETA; survives a page reload and a restart."""
    return _job(runner, job_id)


@router.get("/jobs/{job_id}/result", response_model=Comparison, responses=ERROR_RESPONSES | NOT_FOUND | error(409, "the job has not finished"))
async def job_result(job_id: str, runner: JobsDep) -> JSONResponse:
    """The comparison a finished job wrote: config, data, base evaluation, every run."""
    status = _job(runner, job_id)
    result = await anyio.to_thread.run_sync(runner.result, job_id)
    if result is None:
        raise ApiError(409, f"job_id: job {job_id} is {status.state}; it has no result", "job_id")
    return JSONResponse(result)  # written from a Comparison: served as stored, not parsed into one and back


@router.post("/jobs/{job_id}/cancel", response_model=JobStatus, responses=ERROR_RESPONSES | NOT_FOUND)
async def cancel_job(job_id: str, runner: JobsDep) -> JobStatus:
    """Queued: cancelled at once. Running: stops at its next step."""
    _job(runner, job_id)
    return runner.cancel(job_id)


@router.delete("/jobs/{job_id}", status_code=204, responses=ERROR_RESPONSES | NOT_FOUND | error(409, "the job is still queued or running"))
async def delete_job(job_id: str, runner: JobsDep) -> None:
    """Remove a finished job and its folder."""
    status = _job(runner, job_id)
    if status.state in ("queued", "running"):
        raise ApiError(409, f"job_id: job {job_id} is {status.state}; cancel it first", "job_id")
    await anyio.to_thread.run_sync(runner.delete, job_id)


@router.get("/runs", response_model=RunsOut, responses=ERROR_RESPONSES)
async def runs(settings: SettingsDep) -> dict:
    """Fine-tune comparisons under the runs directory (API jobs and CLI runs), newest first."""
    return {"runs": await anyio.to_thread.run_sync(list_runs, settings.runs_dir)}
