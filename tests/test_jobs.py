"""The job runner: progress, cancel, failure, and status that survives a reload."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch

from outlier_core.errors import InputError
from outlier_core.select.masks import SelectionMask, base_parameters
from outlier_core.tune import train_data
from outlier_core.tune.comparison import comparison_job
from outlier_core.tune.jobs import JobRunner
from outlier_core.tune.runs import list_runs
from outlier_core.tune.training import Cancelled


def looping(steps: int, started: threading.Event | None = None):
    def work(ctx) -> dict:
        for step in range(1, steps + 1):
            if started is not None:
                started.set()
            if ctx.cancelled():
                raise Cancelled()
            time.sleep(0.01)
            ctx.report(step, steps, loss=1.0 / step, tokens_per_s=100.0, phase="looping")
        return {"steps": steps}

    return work


def failing(ctx) -> dict:
    raise RuntimeError("boom")


def test_a_job_reports_progress_and_its_result(tmp_path):
    runner = JobRunner(tmp_path)
    status = runner.submit("loop", looping(5), {"steps": 5})
    assert status.state == "queued"
    done = runner.wait(status.id, timeout=30)
    assert (done.state, done.step, done.total, done.loss, done.phase) == ("done", 5, 5, 0.2, "looping")
    assert done.started is not None and done.finished >= done.started
    assert runner.result(status.id) == {"steps": 5}
    assert json.loads((tmp_path / status.id / "job.json").read_text())["state"] == "done"


def test_cancel_a_running_job_and_keep_serving(tmp_path):
    runner = JobRunner(tmp_path)
    started = threading.Event()
    long = runner.submit("loop", looping(100_000, started))
    queued = runner.submit("loop", looping(3))
    assert started.wait(30)
    runner.cancel(long.id)
    runner.cancel(queued.id)
    assert runner.wait(long.id, timeout=30).state == "cancelled"
    assert runner.get(queued.id).state == "cancelled"  # cancelled while still queued: never ran
    assert runner.get(queued.id).started is None
    failed = runner.submit("fail", failing)
    after = runner.submit("loop", looping(2))
    assert runner.wait(failed.id, timeout=30).state == "failed"
    assert runner.get(failed.id).error == "RuntimeError: boom"
    assert runner.wait(after.id, timeout=30).state == "done"
    assert [s.id for s in runner.list()][:2] == [after.id, failed.id]


def test_status_survives_a_reload_and_interrupted_jobs_read_failed(tmp_path):
    runner = JobRunner(tmp_path)
    job = runner.submit("loop", looping(2))
    runner.wait(job.id, timeout=30)
    interrupted = tmp_path / "20260101-000000-abcdef"
    interrupted.mkdir()
    (interrupted / "job.json").write_text(json.dumps({"id": interrupted.name, "kind": "finetune", "state": "running", "step": 3, "total": 10}))
    reloaded = JobRunner(tmp_path)
    assert reloaded.get(job.id).state == "done" and reloaded.result(job.id) == {"steps": 2}
    assert reloaded.get(interrupted.name).state == "failed"
    assert "interrupted" in reloaded.get(interrupted.name).error
    with pytest.raises(InputError) as err:
        reloaded.get("../../etc")
    assert err.value.field == "job_id"
    reloaded.delete(job.id)
    assert not (tmp_path / job.id).exists()


def test_cancel_a_fine_tune_job_restores_the_model(tiny, tmp_path):
    saved = {n: p.detach().clone() for n, p in base_parameters(tiny).items()}
    flags = [p.requires_grad for p in tiny.hf_model.parameters()]
    mask = SelectionMask.empty(tiny, "m").add(tiny, "model.layers.1.mlp.down_proj.weight", "rows", [3], "click")
    config = train_data.TrainConfig(steps=10_000, batch_size=1, seq_len=16)
    data = train_data.make_data(tiny, train_data.load_corpus("code"), config)
    runner = JobRunner(tmp_path)
    long = runner.submit("finetune", comparison_job(tiny, mask, ("lora",), data, config, threading.Lock()))
    deadline = time.monotonic() + 120
    while runner.get(long.id).step < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    running = runner.get(long.id)
    assert running.state == "running" and running.step >= 2 and running.eta_s > 0 and running.phase == "mask (1/2)"
    runner.cancel(long.id)
    assert runner.wait(long.id, timeout=60).state == "cancelled"
    assert not any(".parametrizations." in n or "lora_" in n for n, _ in tiny.hf_model.named_parameters())
    assert all(torch.equal(p, saved[n]) for n, p in base_parameters(tiny).items())
    assert [p.requires_grad for p in tiny.hf_model.parameters()] == flags
    short = train_data.TrainConfig(steps=2, batch_size=1, seq_len=16)
    next_job = runner.submit("finetune", comparison_job(tiny, mask, ("random",), data, short))
    assert runner.wait(next_job.id, timeout=120).state == "done"
    result = runner.result(next_job.id)
    assert [r["name"] for r in result["runs"]] == ["m", "random"]
    assert (tmp_path / next_job.id / "mask" / "deltas.safetensors").is_file()
    assert list_runs(tmp_path)[0]["id"] == next_job.id
