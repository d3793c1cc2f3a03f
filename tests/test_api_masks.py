"""Masks and fine-tune jobs through the real app (TestClient), tiny model injected.

Expected coordinate counts come from the shapes of an independently built plain Hugging
Face copy of the tiny model; file round trips are checked by reading the files with
safetensors and json directly.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import time
from pathlib import Path
from typing import Iterator

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load as load_safetensors

from app.api.main import create_app
from app.api.settings import Settings
from outlier_core.load.models import LoadedModel, tiny_random_hf

TEXT = "Tiny models still have residual streams."
DOWN = "model.layers.1.mlp.down_proj.weight"
JOB_SECONDS = 180  # a few steps on the tiny model take seconds; the bound only stops a hang


@pytest.fixture(scope="module")
def hf_shapes() -> dict[str, tuple[int, ...]]:
    hf, _ = tiny_random_hf()
    return {name: tuple(p.shape) for name, p in hf.named_parameters()}


@pytest.fixture()
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture()
def client(tiny: LoadedModel, runs_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(runs_dir=runs_dir), model=tiny)) as test_client:
        yield test_client


def dim_count(shapes: dict[str, tuple[int, ...]], layer: int) -> int:
    """What scales, reads and writes one residual dim of a block, counted from the HF shapes:
    one entry per norm, a column of q/k/v/gate/up ([out, in]: out entries), a row of o/down."""
    block = f"model.layers.{layer}."
    norms = 2
    reads = sum(shapes[block + m][0] for m in ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight"))
    writes = sum(shapes[block + m][1] for m in ("self_attn.o_proj.weight", "mlp.down_proj.weight"))
    return norms + reads + writes


def create(client: TestClient, **body) -> dict:
    response = client.post("/api/masks", json={"name": "clicks", **body})
    assert response.status_code == 201, response.text
    return response.json()


def wait_finished(client: TestClient, job_id: str) -> dict:
    deadline = time.monotonic() + JOB_SECONDS
    while time.monotonic() < deadline:
        status = client.get(f"/api/jobs/{job_id}").json()
        if status["state"] in ("done", "failed", "cancelled"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {JOB_SECONDS} s")


# --- masks -------------------------------------------------------------------


def test_a_mask_from_clicks_and_dims_counts_what_it_selects(client: TestClient, hf_shapes) -> None:
    mask = create(client, parts=[{"parameter": DOWN, "kind": "entries", "index": [[3, 5], [7, 9]]}], dims=[{"layer": 2, "dim": 11}])
    assert mask["count"] == 2 + dim_count(hf_shapes, 2)
    assert mask["share"] == pytest.approx(mask["count"] / sum(torch.Size(s).numel() for s in hf_shapes.values()))
    assert mask["model"]["name"] == "tiny-random"
    assert {p["source"] for p in mask["parts"]} >= {"click", "dim 11 at layer 2: reads it"}

    grown = client.post(f"/api/masks/{mask['id']}/parts", json={"parts": [{"parameter": DOWN, "kind": "rows", "index": [3]}]}).json()
    # row 3 of down_proj: 128 entries, one of which ([3, 5]) was already selected
    assert grown["count"] == mask["count"] + hf_shapes[DOWN][1] - 1
    full = client.get(f"/api/masks/{mask['id']}").json()
    assert full["parts"][0]["index"] == [[3, 5], [7, 9]]
    assert [m["id"] for m in client.get("/api/masks").json()["masks"]] == [mask["id"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"parts": [{"parameter": DOWN, "kind": "entries", "index": [[64, 0]]}]}, "parts[0].index"),
        ({"parts": [{"parameter": "model.layers.9.mlp.down_proj.weight", "kind": "rows", "index": [0]}]}, "parts[0].parameter"),
        ({"parts": [{"parameter": DOWN, "kind": "diagonal", "index": [0]}]}, "parts[0].kind"),
        ({"parts": [{"parameter": "model.norm.weight", "kind": "rows", "index": [0]}]}, "parts[0].kind"),
        ({"dims": [{"layer": 2, "dim": 64}]}, "dims[0].dim"),
        ({"dims": [{"layer": 4, "dim": 1}]}, "dims[0].layer"),
        ({"dims": [{"layer": 1, "dim": 1}], "roles": ["sideways"]}, "roles[0]"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_mask_parts_are_refused_naming_the_field(client: TestClient, body: dict, field: str) -> None:
    response = client.post("/api/masks", json={"name": "bad", **body})
    assert response.status_code == 422
    assert response.json()["field"] == field
    assert client.get("/api/masks").json()["masks"] == []


def test_export_writes_both_files_and_import_reads_them_back_exactly(client: TestClient) -> None:
    mask = create(client, parts=[{"parameter": DOWN, "kind": "entries", "index": [[7, 9], [3, 5]]}, {"parameter": "model.layers.0.input_layernorm.weight", "kind": "entries", "index": [[4]]}])
    original = client.get(f"/api/masks/{mask['id']}").json()

    exported_json = client.get(f"/api/masks/{mask['id']}/export")
    assert exported_json.headers["content-disposition"] == 'attachment; filename="clicks.json"'
    manifest = json.loads(exported_json.content)
    assert manifest["parts"][0]["index"] == [[7, 9], [3, 5]]

    exported = client.get(f"/api/masks/{mask['id']}/export", params={"format": "safetensors"})
    tensors = load_safetensors(exported.content)
    assert tensors[DOWN].tolist() == [[3, 5], [7, 9]]  # coordinates per parameter, row-major
    assert tensors["model.layers.0.input_layernorm.weight"].tolist() == [[4]]

    for name, content in [("m.json", exported_json.content), ("m.safetensors", exported.content)]:
        imported = client.post("/api/masks/import", files={"file": (name, content)}).json()
        again = client.get(f"/api/masks/{imported['id']}").json()
        assert {k: v for k, v in again.items() if k != "id"} == {k: v for k, v in original.items() if k != "id"}
    renamed = client.post("/api/masks/import", files={"file": ("m.json", exported_json.content)}, data={"name": "renamed"}).json()
    assert renamed["name"] == "renamed" and renamed["count"] == mask["count"]


class _Trap:
    """Unpickling this creates a folder: proof that a pickle was executed."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_malformed_or_mismatched_mask_files_are_refused(client: TestClient, tmp_path: Path) -> None:
    good = json.loads(client.get(f"/api/masks/{create(client, parts=[{'parameter': DOWN, 'kind': 'rows', 'index': [1]}])['id']}/export").content)
    wrong_model = {**good, "model": {"name": "other", "n_params": 999}}
    unknown_parameter = {**good, "parts": [{**good["parts"][0], "parameter": "model.layers.7.mlp.down_proj.weight"}]}
    out_of_range = {**good, "parts": [{**good["parts"][0], "index": [64]}]}
    trap = tmp_path / "pickle-was-executed"
    cases = [
        (b"{not json", "file"),
        (json.dumps({"format": "something else"}).encode(), "mask.format"),
        (json.dumps(wrong_model).encode(), "mask.model"),
        (json.dumps(unknown_parameter).encode(), "mask.parts[0].parameter"),
        (json.dumps(out_of_range).encode(), "mask.parts[0].index"),
        (pickle.dumps(_Trap(str(trap))), "mask"),
        (b"", "mask"),
    ]
    before = client.get("/api/masks").json()["masks"]
    for content, field in cases:
        response = client.post("/api/masks/import", files={"file": ("mask.bin", io.BytesIO(content))})
        assert response.status_code == 422, (field, response.text)
        assert response.json()["field"] == field
    assert not trap.exists()
    assert client.get("/api/masks").json()["masks"] == before


def test_masks_survive_a_restart_and_delete_removes_their_files(tiny: LoadedModel, runs_dir: Path) -> None:
    with TestClient(create_app(Settings(runs_dir=runs_dir), model=tiny)) as first:
        mask = create(first, parts=[{"parameter": DOWN, "kind": "columns", "index": [2, 4]}])
    assert sorted(p.name for p in (runs_dir / "masks").iterdir()) == [f"{mask['id']}.json", f"{mask['id']}.safetensors"]
    with TestClient(create_app(Settings(runs_dir=runs_dir), model=tiny)) as second:
        assert second.get(f"/api/masks/{mask['id']}").json()["count"] == 2 * 64
        assert second.delete(f"/api/masks/{mask['id']}").status_code == 204
        assert second.get(f"/api/masks/{mask['id']}").status_code == 404
        assert second.delete(f"/api/masks/{mask['id']}").status_code == 404
    assert list((runs_dir / "masks").iterdir()) == []


def test_suggest_keeps_to_the_budget_and_saves_the_mask(client: TestClient) -> None:
    response = client.post("/api/masks/suggest", json={"budget": 300, "text": TEXT * 3, "rules": ["norm_outliers", "super_weights"], "name": "rules"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert 0 < body["mask"]["count"] <= 300
    assert body["budget"] == 300 and set(body["found"]) == {"norm_outliers", "super_weights"}
    assert client.get(f"/api/masks/{body['mask']['id']}").json()["name"] == "rules"
    bad = client.post("/api/masks/suggest", json={"budget": 300, "rules": ["astrology"]})
    assert bad.status_code == 422 and bad.json()["field"] == "rules[0]"


# --- fine-tune jobs ------------------------------------------------------------


def test_a_finetune_job_trains_a_copy_and_leaves_the_served_model_alone(client: TestClient, tiny: LoadedModel) -> None:
    mask = create(client, parts=[{"parameter": DOWN, "kind": "rows", "index": [3]}, {"parameter": "model.layers.0.input_layernorm.weight", "kind": "entries", "index": [[1], [2]]}])
    weights_before = {name: p.detach().clone() for name, p in tiny.hf_parameters().items()}
    scan_before = client.post("/api/scan", json={"text": TEXT}).json()

    started = client.post("/api/finetune", json={"mask_id": mask["id"], "baselines": ["random"], "steps": 3, "seq_len": 32, "batch_size": 2})
    assert started.status_code == 202, started.text
    job = started.json()
    assert job["state"] in ("queued", "running") and job["params"]["mask_name"] == "clicks"
    status = wait_finished(client, job["id"])
    assert status["state"] == "done", status["error"]
    assert status["step"] == status["total"] == 6

    result = client.get(f"/api/jobs/{job['id']}/result").json()
    runs = {run["method"]: run for run in result["runs"]}
    assert set(runs) == {"mask", "random"}
    assert runs["mask"]["trainable"] == runs["random"]["trainable"] == mask["count"] == 128 + 2
    assert 0 < runs["mask"]["changed"] <= mask["count"]
    assert len(runs["mask"]["train_loss"]) == 3
    assert runs["mask"]["checkpointing"] and runs["random"]["checkpointing"]  # the default for coordinate runs

    assert all(torch.equal(p.detach(), weights_before[name]) for name, p in tiny.hf_parameters().items())
    assert client.post("/api/scan", json={"text": TEXT}).json() == scan_before
    listed = client.get("/api/runs").json()["runs"]
    assert [r["id"] for r in listed] == [job["id"]] and listed[0]["mask"] == "clicks"
    assert client.get("/api/jobs").json()["jobs"][0]["id"] == job["id"]

    assert client.delete(f"/api/jobs/{job['id']}").status_code == 204
    assert client.get(f"/api/jobs/{job['id']}").status_code == 404
    assert client.get("/api/runs").json()["runs"] == []


def test_a_running_job_can_be_cancelled_and_the_server_keeps_serving(client: TestClient) -> None:
    mask = create(client, parts=[{"parameter": DOWN, "kind": "rows", "index": [0, 1]}])
    job = client.post("/api/finetune", json={"mask_id": mask["id"], "steps": 100_000, "seq_len": 32, "batch_size": 2}).json()
    deadline = time.monotonic() + JOB_SECONDS
    while client.get(f"/api/jobs/{job['id']}").json()["step"] < 2:
        assert time.monotonic() < deadline, "the job never started training"
        time.sleep(0.05)
    assert client.get(f"/api/jobs/{job['id']}/result").status_code == 409
    assert client.delete(f"/api/jobs/{job['id']}").status_code == 409
    assert client.post("/api/scan", json={"text": TEXT}).status_code == 200  # the job trains its own copy: no wait
    assert client.get(f"/api/jobs/{job['id']}").json()["state"] == "running"
    assert client.post(f"/api/jobs/{job['id']}/cancel").status_code == 200
    status = wait_finished(client, job["id"])
    assert status["state"] == "cancelled" and status["step"] < 100_000
    assert client.get("/api/health").json()["ready"] is True


def test_job_status_never_waits_behind_a_forward_pass(tiny: LoadedModel, runs_dir: Path) -> None:
    app = create_app(Settings(runs_dir=runs_dir), model=tiny)
    with TestClient(app) as client, app.state.service.lock:  # as if a long forward pass were running
        for path in ("/api/jobs", "/api/runs", "/api/masks"):
            started = time.monotonic()
            assert client.get(path).status_code == 200
            assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"mask_id": "20990101-000000-abcdef"}, 404, "mask_id"),
        ({"seq_len": 4096}, 422, "seq_len"),
        ({"data_text": "far too short"}, 422, "data"),
        ({"baselines": ["everything"]}, 422, "baselines[0]"),
        ({"lr": -1}, 422, "lr"),
        ({"checkpoint": "sometimes"}, 422, "checkpoint"),
        ({"shard": "zero3"}, 422, "shard"),
        ({"shard": "fsdp", "baselines": ["random"]}, 422, "shard"),
    ],
)
def test_finetune_requests_with_bad_input_are_refused_up_front(client: TestClient, body: dict, status: int, field: str) -> None:
    mask = create(client, parts=[{"parameter": DOWN, "kind": "rows", "index": [0]}])
    response = client.post("/api/finetune", json={"mask_id": mask["id"], **body})
    assert response.status_code == status, response.text
    assert response.json()["field"] == field
    assert client.get("/api/jobs").json()["jobs"] == []


def test_a_sharded_finetune_refuses_a_norm_entry_up_front_and_trains_a_linear_mask(client: TestClient) -> None:
    norm = create(client, parts=[{"parameter": "model.layers.0.input_layernorm.weight", "kind": "entries", "index": [[1]]}])
    refused = client.post("/api/finetune", json={"mask_id": norm["id"], "shard": "fsdp"})
    assert refused.status_code == 422 and refused.json()["field"] == "shard"
    assert "Linear" in refused.json()["detail"] and client.get("/api/jobs").json()["jobs"] == []

    mask = create(client, parts=[{"parameter": DOWN, "kind": "rows", "index": [3]}])
    job = client.post("/api/finetune", json={"mask_id": mask["id"], "shard": "fsdp", "steps": 2, "seq_len": 32, "batch_size": 2}).json()
    status = wait_finished(client, job["id"])
    assert status["state"] == "done", status["error"]
    assert job["params"]["shard"] == "fsdp"
    [run] = client.get(f"/api/jobs/{job['id']}/result").json()["runs"]
    assert run["method"] == "mask" and run["trainable"] == mask["count"] == 128


def test_unknown_jobs_are_404(client: TestClient) -> None:
    for method, path in [("get", "/api/jobs/nope"), ("get", "/api/jobs/nope/result"), ("post", "/api/jobs/nope/cancel"), ("delete", "/api/jobs/nope")]:
        response = client.request(method, path)
        assert response.status_code == 404 and response.json()["field"] == "job_id"
