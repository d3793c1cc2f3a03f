"""Fine-tune jobs: start, status, result, cancel, delete; and the runs on disk.

A job is a run process (`outlier_core.tune.run_process`): the request is checked here
against the served model, then the run loads its own copy of the model and trains it in
its own process, so the served model is never changed, keeps answering while the run
trains, and survives a run that dies. Status routes are async and read the runner's
memory only: they never wait behind a forward pass.
"""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import JobsDep, MasksDep, ServiceDep, SettingsDep
from app.api.errors import ApiError
from app.api.finetune_budget import check_budget, training_data
from app.api.mask_store import MaskStore
from app.api.schemas.common import ERROR_RESPONSES, MODEL_RESPONSES, error
from app.api.schemas.jobs import FinetuneIn, JobsOut, RunsOut
from app.api.settings import Settings
from outlier_core.errors import InputError
from outlier_core.load.models import LoadedModel, dtype_name
from outlier_core.tune.comparison import Comparison, plan_comparison
from outlier_core.tune.distributed import World, default_processes
from outlier_core.tune.jobs import JobRunner, JobsBusy, JobStatus
from outlier_core.tune.run_config import RunConfig
from outlier_core.tune.run_process import LaunchOptions, prepare_run, run_job
from outlier_core.tune.runs import list_runs
from outlier_core.tune.sharded import linear_slots
from outlier_core.tune.train_data import TrainConfig

router = APIRouter(tags=["jobs"])

NOT_FOUND = error(404, "no such job")
INPUT_MASK = "input_mask.safetensors"  # the mask as it was at submit, in the job's folder


def _job(runner: JobRunner, job_id: str) -> JobStatus:
    try:
        return runner.get(job_id)
    except InputError as err:
        raise ApiError(404, f"job_id: {err.reason}", "job_id") from err


def launch_options(settings: Settings) -> LaunchOptions:
    return LaunchOptions(memory_mb=settings.run_memory_mb, cancel_timeout_s=settings.run_cancel_timeout_s)


def _submit(model: LoadedModel, body: FinetuneIn, store: MaskStore, runner: JobRunner, settings: Settings) -> JobStatus:
    """Check everything the run would refuse, now; then queue the run process."""
    mask = store.get(body.mask_id)
    config = TrainConfig(
        steps=body.steps, lr=body.lr, full_lr=body.full_lr, weight_decay=body.weight_decay, batch_size=body.batch_size,
        seq_len=body.seq_len, seed=body.seed, lora_rank=body.lora_rank,
        checkpoint=body.checkpoint,
    )
    data, source = training_data(model, body, config, settings)  # refuses too much or too little data now, not minutes later in the job
    plan_comparison(model, mask, tuple(body.baselines), data, config, mask_field="mask_id")
    if body.shard:
        linear_slots(model.hf_model, mask)
    processes = body.processes or default_processes(model.device, config.batch_size)
    try:
        World(size=processes).check_batch(config.batch_size, int(data.train.shape[0]))
    except InputError as err:
        raise InputError("processes", err.reason) from err
    check_budget(model, body, mask, config, data, processes, settings)  # the largest run's memory
    run = RunConfig(
        model=model.name, mask=INPUT_MASK, baselines=tuple(dict.fromkeys(body.baselines)), train=config,
        data=source, data_text=body.data_text,
        device=model.device, dtype=dtype_name(model.dtype), processes=processes, shard=body.shard,
    )
    params = {**body.model_dump(exclude={"data_text"}), "processes": processes, "data": data.source, "mask_name": mask.name, "model": model.name}
    try:
        files = {INPUT_MASK: mask.to_safetensors_bytes()}
        return runner.submit("finetune", run_job(run, launch_options(settings), files), params, prepare=prepare_run(run, files))
    except JobsBusy as err:
        raise ApiError(429, str(err), headers={"Retry-After": "10"}) from err


@router.post(
    "/finetune", response_model=JobStatus, status_code=202,
    responses=MODEL_RESPONSES | error(404, "no such mask") | error(429, "as many runs are running and queued as the server takes"),
)
async def start_finetune(body: FinetuneIn, service: ServiceDep, store: MasksDep, runner: JobsDep, settings: SettingsDep) -> JobStatus:
    """Queue a fine-tune of the mask's coordinates and the chosen baselines, as a run process of
    its own; poll /api/jobs/{id}."""
    store.summary(body.mask_id)  # 404 without reading the mask's files on the event loop
    return await service.run(_submit, body, store, runner, settings)


@router.get("/jobs", response_model=JobsOut, responses=ERROR_RESPONSES)
async def list_jobs(runner: JobsDep) -> dict:
    return {"jobs": runner.list()}


@router.get("/jobs/{job_id}", response_model=JobStatus, responses=ERROR_RESPONSES | NOT_FOUND)
async def job_status(job_id: str, runner: JobsDep) -> JobStatus:
    """Progress: step of total, loss, tokens/s, ETA, the run's pid while it runs; survives a
    page reload and a restart. A run that died reads failed, with the end of its log."""
    return _job(runner, job_id)


@router.get("/jobs/{job_id}/result", response_model=Comparison, responses=ERROR_RESPONSES | NOT_FOUND | error(409, "the job has not finished"))
async def job_result(job_id: str, runner: JobsDep) -> JSONResponse:
    """The comparison a finished job wrote: config, data, base evaluation, every run."""
    status = _job(runner, job_id)
    try:
        result = await anyio.to_thread.run_sync(runner.result, job_id)
    except ValueError as err:  # not JSON, or not UTF-8: a file cut short or emptied
        raise ApiError(409, f"job_id: the result of job {job_id} cannot be read back (result.json is empty or truncated)", "job_id") from err
    if result is None:
        raise ApiError(409, f"job_id: job {job_id} is {status.state}; it has no result", "job_id")
    return JSONResponse(result)  # written from a Comparison: served as stored, not parsed into one and back


@router.post("/jobs/{job_id}/cancel", response_model=JobStatus, responses=ERROR_RESPONSES | NOT_FOUND)
async def cancel_job(job_id: str, runner: JobsDep) -> JobStatus:
    """Queued: cancelled at once. Running: its process is asked to stop at its next step
    (SIGTERM), keeping what it trained, and is killed if it has not stopped in time."""
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
