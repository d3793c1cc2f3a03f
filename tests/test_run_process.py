"""Runs as processes: a killed run fails with its log while the server answers, a restarted
runner finds its runs again, a cancel keeps what was trained, the limits hold."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.api.main import SHUTDOWN_REASON, create_app
from app.api.settings import Settings
from outlier_core.load.models import LoadedModel
from outlier_core.select.masks import SelectionMask
from outlier_core.tune.jobs import JobRunner, JobsBusy
from outlier_core.tune.run_config import RunConfig
from outlier_core.tune.run_process import LaunchOptions, RunProcess, follow, prepare_run, resume_job, run_job
from outlier_core.tune.train_data import TrainConfig

DOWN = "model.layers.1.mlp.down_proj.weight"
SECONDS = 120  # bounds that only stop a hang: a tiny run takes seconds


def wait_for(check, what: str, seconds: float = SECONDS):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {seconds} s")


def long_config(tiny: LoadedModel, folder: Path) -> RunConfig:
    SelectionMask.empty(tiny, "m").add(tiny, DOWN, "rows", [3], "click").save(folder / "input_mask.json")
    return RunConfig(model="tiny-random", mask="input_mask.safetensors", train=TrainConfig(steps=100_000, batch_size=2, seq_len=16), data="code", device="cpu")


def test_a_killed_run_fails_with_its_log_and_the_server_keeps_answering(tiny: LoadedModel, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with TestClient(create_app(Settings(runs_dir=runs), model=tiny)) as client:
        mask = client.post("/api/masks", json={"name": "rows", "parts": [{"parameter": DOWN, "kind": "rows", "index": [3]}]}).json()
        body = {"mask_id": mask["id"], "seq_len": 16, "batch_size": 2, "data": "code"}
        job = client.post("/api/finetune", json={**body, "steps": 100_000}).json()
        health_answers = 0

        def training() -> dict | None:
            nonlocal health_answers
            assert client.get("/api/health").json()["ready"] is True  # answered throughout
            health_answers += 1
            status = client.get(f"/api/jobs/{job['id']}").json()
            return status if status["step"] >= 1 else None

        running = wait_for(training, "the run never trained a step")
        assert running["state"] == "running" and running["pid"] not in (None, os.getpid())
        assert running["params"]["processes"] == 1
        os.kill(running["pid"], signal.SIGKILL)

        def ended() -> dict | None:
            nonlocal health_answers
            assert client.get("/api/health").json()["ready"] is True
            health_answers += 1
            status = client.get(f"/api/jobs/{job['id']}").json()
            return status if status["state"] != "running" else None

        failed = wait_for(ended, "the killed run never read failed")
        assert failed["state"] == "failed" and failed["pid"] is None, failed
        assert "killed by SIGKILL" in failed["error"] and "loading tiny-random" in failed["error"]  # the cause, then the log's end
        assert health_answers > 2

        second = client.post("/api/finetune", json={**body, "steps": 2}).json()
        done = wait_for(lambda: (s := client.get(f"/api/jobs/{second['id']}").json())["state"] != "queued" and s["state"] != "running" and s, "the second run")
        assert done["state"] == "done", done["error"]
        assert client.get(f"/api/jobs/{second['id']}/result").json()["runs"][0]["train_loss"]
        last = client.post("/api/finetune", json={**body, "steps": 100_000}).json()
    on_disk = json.loads((runs / last["id"] / "job.json").read_text())  # the server shut down under it
    assert on_disk["state"] == "cancelled" and on_disk["error"] == SHUTDOWN_REASON


def test_a_restarted_runner_reattaches_to_a_live_run_cancels_it_and_fails_a_dead_one(tiny: LoadedModel, tmp_path: Path) -> None:
    options = LaunchOptions(cancel_timeout_s=30)
    source = tmp_path / "source"
    source.mkdir()
    config = long_config(tiny, source)
    first = JobRunner(tmp_path, resume=resume_job(options))
    job = first.submit("finetune", run_job(config, options, {config.mask: (source / config.mask).read_bytes()}))
    running = wait_for(lambda: (s := first.get(job.id)).step >= 1 and s, "the run never trained a step")
    first.close(keep_running=True)  # as a server that stops and leaves its runs training
    assert json.loads((tmp_path / job.id / "job.json").read_text())["state"] == "running"

    second = JobRunner(tmp_path, resume=resume_job(options))
    assert second.get(job.id).state == "running" and second.get(job.id).pid == running.pid
    reattached = wait_for(lambda: (s := second.get(job.id)).step > running.step and s, "the reattached run's progress")
    second.cancel(job.id)  # SIGTERM: it stops at its next step and keeps what it trained
    cancelled = second.wait(job.id, timeout=SECONDS)
    assert cancelled.state == "cancelled" and cancelled.error is None and cancelled.pid is None
    folder = tmp_path / job.id
    stopped = json.loads((folder / "mask" / "stopped.json").read_text())
    assert stopped["method"] == "mask" and stopped["steps_done"] >= reattached.step and len(stopped["train_loss"]) == stopped["steps_done"]
    assert (folder / "mask" / stopped["deltas"]).is_file() and not (folder / "result.json").exists()
    second.close()

    # What a run killed while no server followed it leaves: a status that never ended, a pid that is gone.
    for name in ("job.json", "status.json"):
        on_disk = json.loads((folder / name).read_text())
        (folder / name).write_text(json.dumps({**on_disk, "state": "running", "error": None}))
    third = JobRunner(tmp_path, resume=resume_job(options))
    dead = third.wait(job.id, timeout=SECONDS)
    assert dead.state == "failed" and dead.error.startswith("interrupted") and "loading tiny-random" in dead.error


def test_a_restarted_runner_starts_the_queued_jobs_in_their_order_and_fails_one_whose_mask_is_gone(tiny: LoadedModel, tmp_path: Path) -> None:
    options = LaunchOptions(cancel_timeout_s=30)
    source, runs = tmp_path / "source", tmp_path / "runs"
    source.mkdir()
    long = long_config(tiny, source)
    short = replace(long, train=replace(long.train, steps=2))
    files = {long.mask: (source / long.mask).read_bytes()}
    first = JobRunner(runs, max_running=1, resume=resume_job(options))
    running = first.submit("finetune", run_job(long, options, files), prepare=prepare_run(long, files))
    queued = [first.submit("finetune", run_job(short, options, files), {"n": n}, prepare=prepare_run(short, files)) for n in range(3)]
    wait_for(lambda: first.get(running.id).step >= 1, "the first run never trained a step")
    first.close(keep_running=True)  # a server that stops with one run training and three waiting
    assert [json.loads((runs / job.id / "job.json").read_text())["state"] for job in queued] == ["queued"] * 3
    (runs / queued[1].id / long.mask).unlink()

    second = JobRunner(runs, max_running=1, resume=resume_job(options))
    gone = second.get(queued[1].id)
    assert gone.state == "failed" and gone.started is None, gone
    assert gone.error.startswith("queued when the server stopped, and cannot start after its restart: mask: ") and gone.error.endswith("is gone")
    assert second.get(running.id).state == "running"  # reattached: it holds the one slot
    time.sleep(1.0)
    assert [second.get(job.id).state for job in (queued[0], queued[2])] == ["queued", "queued"]
    second.cancel(running.id)
    assert second.wait(running.id, timeout=SECONDS).state == "cancelled"
    done = [second.wait(job.id, timeout=SECONDS) for job in (queued[0], queued[2])]
    assert [job.state for job in done] == ["done", "done"], [job.error for job in done]
    assert done[0].finished <= done[1].started  # one slot, submit order
    for job, n in zip(done, (0, 2)):
        assert job.params == {"n": n}
        assert len(second.result(job.id)["runs"][0]["train_loss"]) == 2
    second.close()


def test_a_run_over_its_memory_cap_says_so(tiny: LoadedModel, tmp_path: Path) -> None:
    run = RunProcess.launch(tmp_path, long_config(tiny, tmp_path), LaunchOptions(memory_mb=300))
    final = follow(run, lambda status: None)
    assert final.state == "failed"
    assert final.error.startswith("run exceeded its memory cap of 300 MB (OUTLIER_LAB_RUN_MEMORY_MB)"), final.error


def test_the_runner_runs_up_to_its_limit_at_once_and_refuses_past_its_queue(tmp_path: Path) -> None:
    release = threading.Event()
    started: list[str] = []

    def blocked(ctx) -> dict:
        started.append(ctx.id)
        assert release.wait(30)
        return {}

    runner = JobRunner(tmp_path, max_running=2, max_queued=1)
    jobs = [runner.submit("wait", blocked) for _ in range(3)]
    wait_for(lambda: len(started) == 2, "two jobs running at once")
    assert runner.get(jobs[2].id).state == "queued"
    with pytest.raises(JobsBusy):
        runner.submit("wait", blocked)
    release.set()
    assert all(runner.wait(j.id, timeout=30).state == "done" for j in jobs)
    runner.close()
