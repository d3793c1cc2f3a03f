"""What only a CUDA device can show; bench/gpu_check.sh runs these on a GPU box (they live
outside tests/, so the CPU suite neither collects nor skips them):
a bf16 sparse run on the GPU trains exactly its mask, a run process trains on the GPU,
and two GPUs train what one does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from outlier_core.load.models import load_model
from outlier_core.select.masks import SelectionMask, base_parameters
from outlier_core.tune import train_data
from outlier_core.tune.comparison import compare
from outlier_core.tune.run_config import RunConfig
from outlier_core.tune.run_process import RunProcess, follow

pytestmark = pytest.mark.gpu

DOWN = "model.layers.1.mlp.down_proj.weight"


def test_a_bf16_sparse_run_on_the_gpu_changes_only_its_mask(tmp_path: Path) -> None:
    model = load_model("tiny-random", device="cuda", dtype="bf16")
    before = {n: p.detach().clone() for n, p in base_parameters(model).items()}
    mask = SelectionMask.empty(model, "m").add(model, DOWN, "rows", [3], "click")
    config = train_data.TrainConfig(steps=3, batch_size=2, seq_len=16, lr=1e-2)
    data = train_data.make_data(model, train_data.load_corpus("code"), config)
    run = compare(model, mask, (), data, config, tmp_path).runs[0]
    assert 0 < run.changed <= mask.count and run.peak_memory_mb > 0
    assert all(torch.equal(p, before[n]) for n, p in base_parameters(model).items())


def run_on_cuda(folder: Path, processes: int) -> dict:
    folder.mkdir()
    model = load_model("tiny-random", device="cpu")
    SelectionMask.empty(model, "m").add(model, DOWN, "rows", [3], "click").save(folder / "input_mask.json")
    config = RunConfig(
        model="tiny-random", mask="input_mask.safetensors", baselines=("lora",), data="code", device="cuda", dtype="float32",
        train=train_data.TrainConfig(steps=3, batch_size=4, seq_len=16), processes=processes,
    )
    final = follow(RunProcess.launch(folder, config), lambda status: None)
    assert final.state == "done", final.error
    return json.loads((folder / "comparison.json").read_text())


def test_a_run_process_trains_on_the_gpu(tmp_path: Path) -> None:
    comparison = run_on_cuda(tmp_path / "one", 1)
    assert [r["method"] for r in comparison["runs"]] == ["mask", "lora"]
    assert all(r["peak_memory_mb"] > 0 for r in comparison["runs"])


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_two_gpus_train_what_one_does(tmp_path: Path) -> None:
    one, two = run_on_cuda(tmp_path / "one", 1), run_on_cuda(tmp_path / "two", 2)
    for a, b in zip(one["runs"], two["runs"], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["eval_after"]["loss"] == pytest.approx(a["eval_after"]["loss"], rel=1e-4)
