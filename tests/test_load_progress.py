"""A model load says which stage it is in and how far along: from the loader's callback through
/api/health and /api/models while the server loads.

Reference: the tensors a checkpoint folder holds, counted with safetensors directly (the
reading stage must count exactly those, one by one), and the stages each kind of load passes.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors import safe_open
from transformers import LlamaConfig, LlamaForCausalLM

from app.api.main import create_app
from app.api.settings import Settings
from outlier_core.load.models import load_model, tiny_random_hf
from outlier_core.load.placement import Placement
from outlier_core.load.progress import BRIDGING, BUILDING, PLACING, READING, LoadProgress


def checkpoint_tensors(folder: Path) -> int:
    count = 0
    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), "pt") as f:
            count += len(list(f.keys()))
    return count


def stages(seen: list[LoadProgress]) -> list[str]:
    return [s for i, s in enumerate(p.stage for p in seen) if i == 0 or seen[i - 1].stage != s]


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    """The tiny model saved as a plain Hugging Face folder in several shards."""
    folder = tmp_path_factory.mktemp("sharded")
    hf, tokenizer = tiny_random_hf()
    hf.save_pretrained(folder, max_shard_size="100KB")
    tokenizer.save_pretrained(folder)
    return folder


def test_a_folder_load_reads_every_tensor_of_every_shard_one_by_one(sharded):
    assert len(list(sharded.glob("*.safetensors"))) > 1
    seen: list[LoadProgress] = []
    load_model(str(sharded), device="cpu", progress=seen.append)
    assert stages(seen) == [READING, BRIDGING]
    counted = [p for p in seen if p.done is not None]
    n = checkpoint_tensors(sharded)
    assert [p.done for p in counted] == list(range(n + 1))
    assert {p.total for p in counted} == {n} and {p.unit for p in counted} == {"tensors"}
    assert counted[-1].text == f"reading weights: {n} of {n} tensors"


def test_a_model_built_in_code_and_a_spread_one_say_so(tmp_path):
    seen: list[LoadProgress] = []
    load_model("tiny-random", device="cpu", progress=seen.append)
    assert stages(seen) == [BUILDING, BRIDGING]
    seen.clear()
    load_model("tiny-random", placement=Placement({"": "cpu"}, offload_folder=str(tmp_path)), progress=seen.append)
    assert stages(seen) == [BUILDING, PLACING, BRIDGING]


@pytest.fixture(scope="module")
def wide(tmp_path_factory) -> Path:
    """A config-built Llama large enough (~60M parameters) that a load lasts long enough to watch."""
    folder = tmp_path_factory.mktemp("wide")
    config = LlamaConfig(vocab_size=259, hidden_size=1024, intermediate_size=2816, num_hidden_layers=6, num_attention_heads=8,
                         num_key_value_heads=8, max_position_embeddings=512, tie_word_embeddings=True)
    config.architectures = ["LlamaForCausalLM"]
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder, max_shard_size="50MB")
    tiny_random_hf()[1].save_pretrained(folder)
    return folder


def test_the_api_reports_the_loads_stages_while_it_loads(wide, tmp_path):
    n = checkpoint_tensors(wide)
    settings = Settings(model="tiny-random", runs_dir=tmp_path / "runs", model_dirs=[wide.parent])
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 60
        while not client.get("/api/health").json()["ready"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.post("/api/model", json={"name": str(wide)}).status_code == 202
        seen, listed = [], []
        while time.monotonic() < deadline:
            health = client.get("/api/health").json()
            if health["ready"]:
                break
            if health["progress"]:
                seen.append(health["progress"])
            listed.append(client.get("/api/models").json()["progress"])
        assert health["model"] == str(wide) and health["progress"] is None
        assert client.get("/api/models").json()["progress"] is None
    assert seen, "no progress reported during the load"
    order = [READING, BRIDGING]
    observed = [p["stage"] for p in seen]
    assert observed == sorted(observed, key=order.index)  # stages only move forward
    for p in seen:
        if p["done"] is not None:
            assert p["total"] == n and 0 <= p["done"] <= n and p["text"] == f"reading weights: {p['done']} of {n} tensors"
        else:
            assert p["text"] == p["stage"]
    assert any(p is not None and p["stage"] in order for p in listed)
