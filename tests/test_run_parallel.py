"""Runs over several processes and several runs at once: 2-process data parallel (gloo on
the CPU) against one process, launched by torchrun and by accelerate, two runs through a
local Ray, a TensorBoard tracker."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file

from app.api.main import create_app
from app.api.settings import Settings
from outlier_core.errors import InputError
from outlier_core.load.models import LoadedModel
from outlier_core.select.masks import SelectionMask
from outlier_core.tune import train_data
from outlier_core.tune.comparison import compare
from outlier_core.tune.distributed import World
from outlier_core.tune.executor import run_many
from outlier_core.tune.run_config import RunConfig, write_config
from outlier_core.tune.run_process import RunProcess, follow
from outlier_core.tune.train_data import TrainConfig

DOWN = "model.layers.1.mlp.down_proj.weight"


def write_mask(tiny: LoadedModel, folder: Path) -> SelectionMask:
    mask = SelectionMask.empty(tiny, "m").add(tiny, DOWN, "rows", [3, 5], "click")
    mask.save(folder / "input_mask.json")
    return mask


def method_files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.glob("*/*") if p.parent.name in ("mask", "lora")}


def test_two_processes_train_what_one_process_does_at_the_same_global_batch(tiny: LoadedModel, tmp_path: Path) -> None:
    two, one = tmp_path / "two", tmp_path / "one"
    two.mkdir()
    mask = write_mask(tiny, two)
    train = TrainConfig(steps=3, batch_size=4, seq_len=16)
    config = RunConfig(model="tiny-random", mask="input_mask.safetensors", baselines=("lora",), train=train, data="code", device="cpu", processes=2)
    final = follow(RunProcess.launch(two, config), lambda status: None)
    assert final.state == "done", final.error
    log = (two / "run.log").read_text()
    assert "[rank 0]" in log and "[rank 1]" in log
    shares = [re.search(rf"\[rank {rank}\] .*held-out evaluation: this rank scored (\d+) of (\d+) blocks", log) for rank in (0, 1)]
    assert all(shares) and int(shares[0][1]) + int(shares[1][1]) == int(shares[0][2]) and int(shares[1][1]) > 0  # each rank scored its part

    data = train_data.make_data(tiny, train_data.load_corpus("code"), train)
    reference = compare(tiny, mask, ("lora",), data, train, one)  # the same run in one process, in this one
    parallel = json.loads((two / "comparison.json").read_text())
    for ours, theirs in zip(reference.runs, parallel["runs"], strict=True):
        assert theirs["method"] == ours.method and theirs["trainable"] == ours.trainable
        assert theirs["train_loss"] == pytest.approx(list(ours.train_loss), rel=1e-5)
        for key in ("eval_before", "eval_after"):  # scored in parts over the ranks, summed: one process's numbers
            assert theirs[key]["loss"] == pytest.approx(getattr(ours, key).loss, rel=1e-5)
            assert theirs[key]["tokens"] == getattr(ours, key).n_tokens
        deltas, expected = load_file(two / ours.method / "deltas.safetensors"), load_file(one / ours.method / "deltas.safetensors")
        assert deltas.keys() == expected.keys()
        assert all(torch.allclose(deltas[k], expected[k], atol=1e-6) for k in deltas)
    assert method_files(two) == method_files(one) and method_files(one) >= {"mask/deltas.safetensors", "lora/deltas.safetensors"}
    assert {"comparison.json", "result.json", "status.json", "run_config.json"} <= {p.name for p in two.iterdir()}


def test_accelerate_launch_runs_the_entry_point_on_two_ranks(tiny: LoadedModel, tmp_path: Path) -> None:
    # `--multi_gpu` is accelerate's torch.distributed.run path, on the CPU too (gloo); its
    # `--cpu` takes the single-process launcher (README: Runs as processes).
    mask = write_mask(tiny, tmp_path)
    train = TrainConfig(steps=2, batch_size=4, seq_len=16)
    config_path = write_config(tmp_path, RunConfig(model="tiny-random", mask="input_mask.safetensors", train=train, data="code", device="cpu", processes=2))
    accelerate = Path(sys.executable).with_name("accelerate")
    command = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "-m", "outlier_core.tune.run_main", "--config", str(config_path)]
    launched = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "[rank 0]" in launched.stderr and "[rank 1]" in launched.stderr
    reference = compare(tiny, mask, (), train_data.make_data(tiny, train_data.load_corpus("code"), train), train, tmp_path / "one").runs[0]
    ours = json.loads((tmp_path / "result.json").read_text())["runs"][0]
    assert ours["train_loss"] == pytest.approx(list(reference.train_loss), rel=1e-5)
    assert ours["eval_after"]["loss"] == pytest.approx(reference.eval_after.loss, rel=1e-5)


def test_a_batch_that_does_not_split_over_the_processes_is_refused_up_front(tiny: LoadedModel, tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        World(size=2).check_batch(batch_size=3, train_blocks=100)
    assert err.value.field == "batch_size" and "2 processes" in err.value.reason
    World(size=2).check_batch(batch_size=4, train_blocks=100)
    with TestClient(create_app(Settings(runs_dir=tmp_path), model=tiny)) as client:
        mask = client.post("/api/masks", json={"name": "rows", "parts": [{"parameter": DOWN, "kind": "rows", "index": [3]}]}).json()
        refused = client.post("/api/finetune", json={"mask_id": mask["id"], "batch_size": 3, "seq_len": 16, "processes": 2})
        assert refused.status_code == 422 and refused.json()["field"] == "processes"
        assert client.get("/api/jobs").json()["jobs"] == []


def test_two_runs_through_a_local_ray(tiny: LoadedModel, tmp_path: Path) -> None:
    import ray  # a dependency: a missing install fails here instead of skipping
    write_mask(tiny, tmp_path)
    base = RunConfig(model="tiny-random", mask=str(tmp_path / "input_mask.safetensors"), train=TrainConfig(steps=2, batch_size=2, seq_len=16), data="code", device="cpu")
    runs = [(replace(base, train=replace(base.train, seed=seed)), tmp_path / f"seed{seed}") for seed in (0, 1)]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        outcomes = run_many(runs)
    finally:
        ray.shutdown()
    assert [(o.folder, o.state) for o in outcomes] == [(str(folder), "done") for _, folder in runs]
    losses = [json.loads((folder / "result.json").read_text())["runs"][0]["train_loss"] for _, folder in runs]
    assert losses[0] != losses[1]  # each run trained its own seed


def test_a_tensorboard_tracker_records_the_curve(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from outlier_core.tune.tracking import open_tracker

    tracker = open_tracker("tensorboard", tmp_path, "run", {"model": "tiny-random", "train": {"lr": 1e-3, "steps": 2}, "track": None})
    for step, loss in enumerate((2.5, 2.0), start=1):
        tracker.log({"mask/train_loss": loss}, step=step)
    tracker.finish()
    events = EventAccumulator(str(tmp_path / "tracking" / "run")).Reload()
    assert [(e.step, e.value) for e in events.Scalars("mask/train_loss")] == [(1, 2.5), (2, 2.0)]
