"""Issue 15's probes where size matters: SmolLM2 served at the default settings.

Each request the issue saw take gigabytes or minutes is answered in seconds here, and the
process's peak resident memory (`PeakMemory`, VmHWM reset before the request) grows by at
most a few hundred MB. Nothing here allocates what the probes asked for.
"""

from __future__ import annotations

import json
import random
import struct
import time
from pathlib import Path
from typing import Iterator

import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from app.api.settings import Settings
from outlier_core.load.models import LoadedModel
from outlier_core.load.token_limits import first_tokens, longer_than
from outlier_core.select.masks import FORMAT, model_shapes
from outlier_core.tune.memory import PeakMemory
from tests.conftest import PROSE

pytestmark = pytest.mark.real

EMBED = "model.embed_tokens.weight"  # (49152, 576)
MAX_GROWTH_MB = 300


@pytest.fixture()
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture()
def client(smol: LoadedModel, runs_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(runs_dir=runs_dir), model=smol)) as test_client:
        yield test_client


class Bounded:
    """A request that must answer within `seconds` and grow the peak RSS by less than MAX_GROWTH_MB."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __enter__(self) -> Bounded:
        self.peak = PeakMemory("cpu").__enter__()
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        elapsed = time.monotonic() - self.started
        self.peak.__exit__(*exc)
        if exc[0] is None:
            assert elapsed < self.seconds, f"took {elapsed:.1f} s"
            assert self.peak.peak_mb < MAX_GROWTH_MB, f"peak RSS grew by {self.peak.peak_mb:.0f} MB"


def test_a_column_repeated_thousands_of_times_costs_one_column(client: TestClient, smol: LoadedModel, runs_dir: Path) -> None:
    for repeats in (2000, 5000):
        with Bounded(10):
            response = client.post("/api/masks", json={"name": f"x{repeats}", "parts": [{"parameter": EMBED, "kind": "columns", "index": [0] * repeats}]})
        assert response.status_code == 201 and response.json()["count"] == 49152
    with TestClient(create_app(Settings(runs_dir=runs_dir), model=smol)) as restarted, Bounded(5):
        assert restarted.get("/api/health").status_code == 200
        assert [m["count"] for m in restarted.get("/api/masks").json()["masks"]] == [49152, 49152]


def test_every_embedding_row_and_ten_thousand_dims_are_refused_at_once(client: TestClient, runs_dir: Path) -> None:
    with Bounded(10):
        rows = client.post("/api/masks", json={"name": "rows", "parts": [{"parameter": EMBED, "kind": "rows", "index": list(range(49152))}]})
    assert rows.status_code == 422 and "28,311,552" in rows.json()["detail"]
    with Bounded(5):
        dims = client.post("/api/masks", json={"name": "dims", "dims": [{"layer": i % 30, "dim": (7 * i) % 576} for i in range(10_000)]})
    assert dims.status_code == 422 and dims.json()["field"] == "dims" and "17,700,480" in dims.json()["detail"]
    assert list((runs_dir / "masks").iterdir()) == []


@pytest.mark.parametrize("shape", [[1, 2**30], [1, 2**33], [2**63, 1]])
def test_a_600_byte_import_declaring_a_huge_shape_is_refused_at_once(client: TestClient, smol: LoadedModel, shape: list[int]) -> None:
    manifest = {"format": FORMAT, "name": "probe", "model": {"name": smol.name, "n_params": model_shapes(smol)[1]}, "layout": "",
                "parameters": {EMBED: {"shape": shape}}, "parts": [{"parameter": EMBED, "kind": "columns", "source": "probe", "size": 1}]}
    header = json.dumps({"__metadata__": {"format": FORMAT, "manifest": json.dumps(manifest)},
                         "parts.0": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}}).encode()
    data = struct.pack("<Q", len(header)) + header + struct.pack("<q", 0)
    assert len(data) < 700
    with Bounded(5):
        response = client.post("/api/masks/import", files={"file": ("mask.safetensors", data)})
    assert response.status_code == 422


def test_a_finetune_that_cannot_fit_is_refused_at_once(client: TestClient) -> None:
    mask = client.post("/api/masks", json={"name": "m", "dims": [{"layer": 3, "dim": 7}]}).json()
    huge = {"mask_id": mask["id"], "batch_size": 1024, "seq_len": 8192, "lora_rank": 65536, "baselines": ["lora"]}
    with Bounded(20):
        probe = client.post("/api/finetune", json={**huge, "data_text": "word " * 380_000})  # 1.9 MB
        assert probe.status_code == 422 and probe.json()["field"] == "data_text"
        sized = client.post("/api/finetune", json={**huge, "data_text": "The keeper counted boats. " * 4000})
        assert sized.status_code == 422 and sized.json()["field"] in ("batch_size", "lora_rank") and "GiB" in sized.json()["detail"]
    assert client.get("/api/jobs").json()["jobs"] == []


def test_megabytes_of_evaluation_text_are_refused_from_a_prefix(client: TestClient) -> None:
    rng = random.Random(0)
    eval_text = " ".join("".join(rng.choice("abcdefghij") for _ in range(rng.randint(1, 9))) for _ in range(300_000))  # ~1.5 MB
    with Bounded(5):
        response = client.post("/api/intervene", json={"text": PROSE, "interventions": [{"layer": 3, "position": 1, "dim": 7}], "eval_text": eval_text})
    assert response.status_code == 422 and response.json()["field"] == "eval_text" and "4096" in response.json()["detail"]


def test_a_bpe_prefix_gives_the_whole_texts_first_tokens(smol: LoadedModel) -> None:
    text = (PROSE + "\n\n") * 200
    whole = smol.tokenizer(text, add_special_tokens=False).input_ids
    for n in (1, 100, 1023, 4096, len(whole)):
        assert first_tokens(smol, text, n) == whole[:n]
        assert longer_than(smol, text, n) == (len(whole) > n)
    assert not longer_than(smol, text, len(whole))
