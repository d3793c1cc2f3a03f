"""A fine-tune run's deltas on the served model, through the real app (TestClient).

The runs come from a real `compare` on the tiny model. What the API serves is
checked against a plain Hugging Face copy of the tiny model whose weights were edited by
hand from the run's safetensors file, and against the served model's own weights and
logits before anything was attached (bit for bit).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Iterator

import pytest
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient
from safetensors import safe_open
from safetensors.torch import load_file

from app.api.main import create_app
from app.api.settings import Settings
from outlier_core.load.models import LoadedModel, load_model, tiny_random_hf
from outlier_core.select.masks import SelectionMask, base_parameters
from outlier_core.tune import train_data
from outlier_core.tune.comparison import compare
from tests.hf_reference import byte_ids, sparse_edited

TEXT = "Tiny models still have residual streams."
DOWN = "model.layers.1.mlp.down_proj.weight"
NORM = "model.layers.0.post_attention_layernorm.weight"
RUN_ID = "20990101-000000-abcdef"
ZERO_ONE = {"layer": 1, "position": 1, "dim": 3, "mode": "zero"}
JOB_SECONDS = 180


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real comparison (mask, LoRA, full) trained on a tiny model of its own."""
    trainer = load_model("tiny-random", device="cpu")
    mask = SelectionMask.empty(trainer, "clicks").add(trainer, DOWN, "rows", [3, 7], "click").add(trainer, NORM, "entries", [[5], [17]], "click")
    config = train_data.TrainConfig(steps=3, lr=0.05, full_lr=1e-3, batch_size=2, seq_len=16)
    data = train_data.make_data(trainer, train_data.load_corpus("code"), config)
    root = tmp_path_factory.mktemp("runs")
    compare(trainer, mask, ("lora", "full"), data, config, root / RUN_ID)
    return root


def serve(model: LoadedModel, runs_dir: Path) -> TestClient:
    return TestClient(create_app(Settings(runs_dir=runs_dir, max_tokens=128), model=model))


@pytest.fixture()
def client(tiny: LoadedModel, runs_dir: Path) -> Iterator[TestClient]:
    """The session's tiny model served; the app's shutdown takes unmerged deltas off it again."""
    with serve(tiny, runs_dir) as test_client:
        yield test_client
    assert not any(".parametrizations." in n or "lora_" in n for n, _ in tiny.hf_model.named_parameters())


def baseline_loss(client: TestClient) -> float:
    """The served model's mean next-token loss on TEXT (the intervene route's cached baseline)."""
    response = client.post("/api/intervene", json={"text": TEXT, "interventions": [ZERO_ONE]})
    assert response.status_code == 200, response.text
    return response.json()["baseline"]["loss"]


def reference_loss(hf: torch.nn.Module) -> float:
    hf.byte_tokenizer = tiny_random_hf()[1]
    ids = torch.tensor(byte_ids(hf, TEXT))
    with torch.no_grad():
        logits = hf.eval()(ids[None]).logits[0]  # (T, V)
    return float(F.cross_entropy(logits[:-1], ids[1:]))


def lora_reference(path: Path) -> torch.nn.Module:
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        factors = {key: f.get_tensor(key) for key in f.keys()}
    hf, _ = tiny_random_hf()
    params = dict(hf.named_parameters())
    with torch.no_grad():
        for target in json.loads(meta["targets"]):
            params[f"{target}.weight"] += factors[f"{target}.lora_B"] @ factors[f"{target}.lora_A"] * (float(meta["alpha"]) / int(meta["rank"]))
    return hf


def snapshot(model: LoadedModel) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in base_parameters(model).items()}


def logits(model: LoadedModel) -> torch.Tensor:
    with torch.no_grad():
        return model.bridge(torch.tensor([[1, 84, 105, 110, 121]]), return_type="logits")


def apply(client: TestClient, method: str, run: str = RUN_ID) -> dict:
    response = client.post("/api/model/deltas", json={"run": run, "method": method})
    assert response.status_code == 200, response.text
    return response.json()["applied"]


def test_a_sparse_run_serves_base_plus_its_file_switches_off_exactly_and_detaches(client: TestClient, tiny: LoadedModel, runs_dir: Path) -> None:
    saved, base_logits = snapshot(tiny), logits(tiny)
    base = baseline_loss(client)
    assert client.get("/api/model/deltas").json() == {"applied": None}
    n_params = client.get("/api/model").json()["n_params"]

    applied = apply(client, "mask")
    record = json.loads((runs_dir / RUN_ID / "mask" / "run.json").read_text())
    assert applied == {
        "run": RUN_ID, "method": "mask", "name": "clicks", "model": "tiny-random", "trainable": record["trainable"],
        "enabled": True, "merged": False, "serving": "base + deltas",
    }
    assert client.get("/api/model/deltas").json() == {"applied": applied}
    assert client.get("/api/health").json()["deltas"] == applied
    model = client.get("/api/model").json()
    assert model["deltas"] == applied and model["n_params"] == n_params

    on = baseline_loss(client)
    assert on == pytest.approx(reference_loss(sparse_edited(runs_dir / RUN_ID / "mask" / "deltas.safetensors")), abs=1e-5)
    assert abs(on - base) > 1e-4

    switched = client.patch("/api/model/deltas", json={"enabled": False})
    assert switched.status_code == 200 and switched.json()["applied"]["enabled"] is False
    assert client.get("/api/health").json()["deltas"]["enabled"] is False
    assert baseline_loss(client) == base  # not the cached answer of the switched-on model
    assert torch.equal(logits(tiny), base_logits)
    assert client.patch("/api/model/deltas", json={"enabled": True}).json()["applied"]["enabled"] is True
    assert baseline_loss(client) == on

    for path, params in (("/api/weights", {}), (f"/api/weights/{DOWN}", {}), ("/api/weights/at-dims", {"dims": [3]})):
        refused = client.get(path, params=params)
        assert refused.status_code == 409 and refused.json()["field"] == "deltas", path
    edit = client.post("/api/intervene", json={"text": TEXT, "weights": [{"param": DOWN, "index": [3, 0]}]})
    assert edit.status_code == 409 and edit.json()["field"] == "deltas"
    again = client.post("/api/model/deltas", json={"run": RUN_ID, "method": "lora"})
    assert again.status_code == 409 and again.json()["field"] == "run"

    assert client.delete("/api/model/deltas").status_code == 204
    assert client.get("/api/model/deltas").json() == {"applied": None}
    assert client.get("/api/health").json()["deltas"] is None
    assert all(torch.equal(p, saved[n]) for n, p in base_parameters(tiny).items())
    assert torch.equal(logits(tiny), base_logits)
    assert baseline_loss(client) == base
    assert client.get("/api/weights").status_code == 200


def test_a_lora_run_serves_w_plus_b_a_alpha_over_r(client: TestClient, tiny: LoadedModel, runs_dir: Path) -> None:
    saved, base = snapshot(tiny), baseline_loss(client)
    applied = apply(client, "lora")
    assert applied["name"].startswith("lora_r")
    on = baseline_loss(client)
    assert on == pytest.approx(reference_loss(lora_reference(runs_dir / RUN_ID / "lora" / "deltas.safetensors")), abs=1e-5)
    assert abs(on - base) > 1e-6
    client.patch("/api/model/deltas", json={"enabled": False})
    assert baseline_loss(client) == base
    assert client.delete("/api/model/deltas").status_code == 204
    assert all(torch.equal(p, saved[n]) for n, p in base_parameters(tiny).items())


def test_a_full_run_serves_the_files_weights(client: TestClient, tiny: LoadedModel, runs_dir: Path) -> None:
    saved = snapshot(tiny)
    tuned = load_file(str(runs_dir / RUN_ID / "full" / "deltas.safetensors"))
    apply(client, "full")
    assert all(torch.equal(p, tuned[n]) for n, p in base_parameters(tiny).items())
    hf, _ = tiny_random_hf()
    hf.load_state_dict(tuned, strict=False)
    assert baseline_loss(client) == pytest.approx(reference_loss(hf), abs=1e-5)
    assert client.get("/api/weights").status_code == 200  # the tuned weights are the parameters themselves
    assert client.delete("/api/model/deltas").status_code == 204
    assert all(torch.equal(p, saved[n]) for n, p in base_parameters(tiny).items())


def test_merge_keeps_base_plus_delta_until_the_model_is_reloaded(runs_dir: Path) -> None:
    own = load_model("tiny-random", device="cpu")  # a merge changes it for good
    saved = snapshot(own)
    with serve(own, runs_dir) as client:
        apply(client, "mask")
        client.patch("/api/model/deltas", json={"enabled": False})
        merged = client.post("/api/model/deltas/merge")
        assert merged.status_code == 200
        state = merged.json()["applied"]
        assert state["merged"] is True and state["enabled"] is True and "until the model is reloaded" in state["serving"]
        assert client.get("/api/health").json()["deltas"] == state

        tensors = load_file(str(runs_dir / RUN_ID / "mask" / "deltas.safetensors"))
        now = base_parameters(own)
        assert not any(".parametrizations." in n for n, _ in own.hf_model.named_parameters())
        for name, weight in saved.items():
            expected = weight
            if f"{name}.index" in tensors:
                expected = weight.flatten().index_add(0, tensors[f"{name}.index"], tensors[f"{name}.values"]).view_as(weight)
            assert torch.equal(now[name], expected), name
        assert baseline_loss(client) == pytest.approx(reference_loss(sparse_edited(runs_dir / RUN_ID / "mask" / "deltas.safetensors")), abs=1e-5)
        assert client.get("/api/weights").status_code == 200  # merged: the weights are the parameters again

        for method, path, body in (("patch", "/api/model/deltas", {"enabled": False}), ("post", "/api/model/deltas/merge", None), ("delete", "/api/model/deltas", None)):
            refused = client.request(method, path, json=body)
            assert refused.status_code == 409 and "reload the model" in refused.json()["detail"], (method, path)
        refused = client.post("/api/model/deltas", json={"run": RUN_ID, "method": "lora"})
        assert refused.status_code == 409 and refused.json()["field"] == "run"

        assert client.post("/api/model", json={"name": "tiny-random", "device": "cpu"}).status_code == 202
        deadline = time.monotonic() + 120
        while not (health := client.get("/api/health").json())["ready"]:
            assert time.monotonic() < deadline and health["error"] is None, health
            time.sleep(0.05)
        assert health["deltas"] is None and client.get("/api/model/deltas").json() == {"applied": None}
        assert client.get("/api/model").json()["deltas"] is None
        apply(client, "lora")  # the fresh model takes a run again


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"run": "20990101-000000-000000", "method": "mask"}, 404, "run"),
        ({"run": "masks", "method": "mask"}, 404, "run"),  # a folder of the runs directory, but not a run
        ({"run": RUN_ID, "method": "random"}, 404, "method"),  # not trained in this run
        ({"run": RUN_ID, "method": "everything"}, 422, "method"),
        ({"run": "../" + RUN_ID, "method": "mask"}, 422, "run"),
        ({"run": "..", "method": "mask"}, 422, "run"),
        ({"run": "/etc", "method": "mask"}, 422, "run"),
        ({"run": f"{RUN_ID}/../{RUN_ID}", "method": "mask"}, 422, "run"),
        ({"method": "mask"}, 422, "run"),
        ({"run": RUN_ID, "method": "mask", "extra": 1}, 422, "extra"),
    ],
)
def test_bad_attach_requests_are_refused_naming_the_field(client: TestClient, body: dict, status: int, field: str) -> None:
    client.post("/api/masks", json={"name": "makes runs/masks exist"})
    response = client.post("/api/model/deltas", json=body)
    assert response.status_code == status, response.text
    assert response.json()["field"] == field
    assert client.get("/api/model/deltas").json() == {"applied": None}


def test_runs_that_do_not_fit_are_refused(client: TestClient, runs_dir: Path) -> None:
    broken = runs_dir / "20990101-000000-broken"
    shutil.copytree(runs_dir / RUN_ID, broken)
    try:
        record = json.loads((broken / "lora" / "run.json").read_text())
        (broken / "lora" / "run.json").write_text(json.dumps({**record, "deltas": None}))
        refused = client.post("/api/model/deltas", json={"run": broken.name, "method": "lora"})
        assert refused.status_code == 422 and refused.json()["field"] == "method" and "saved no deltas" in refused.json()["detail"]

        (broken / "full" / "deltas.safetensors").write_bytes(b"{}")
        refused = client.post("/api/model/deltas", json={"run": broken.name, "method": "full"})
        assert refused.status_code == 422 and refused.json()["field"] == "run"

        comparison = json.loads((broken / "comparison.json").read_text())
        comparison["mask"]["model"] = {"name": "smollm2-135m", "n_params": 134515008}
        (broken / "comparison.json").write_text(json.dumps(comparison))
        refused = client.post("/api/model/deltas", json={"run": broken.name, "method": "mask"})
        assert refused.status_code == 422 and refused.json()["field"] == "run" and "smollm2-135m" in refused.json()["detail"]
    finally:
        shutil.rmtree(broken)
    assert client.get("/api/model/deltas").json() == {"applied": None}


def test_switching_merging_or_detaching_nothing_is_a_conflict(client: TestClient) -> None:
    for method, path, body, field in (
        ("patch", "/api/model/deltas", {"enabled": False}, "enabled"),
        ("post", "/api/model/deltas/merge", None, "deltas"),
        ("delete", "/api/model/deltas", None, "deltas"),
    ):
        response = client.request(method, path, json=body)
        assert response.status_code == 409 and response.json()["field"] == field, (method, path)
    bad = client.patch("/api/model/deltas", json={"enabled": "maybe"})
    assert bad.status_code == 422 and bad.json()["field"] == "enabled"


def test_a_finetune_job_trains_from_the_base_while_a_run_is_applied(client: TestClient, runs_dir: Path) -> None:
    applied = apply(client, "mask")
    on = baseline_loss(client)
    mask = client.post("/api/masks", json={"name": "rows", "parts": [{"parameter": DOWN, "kind": "rows", "index": [3]}]}).json()
    job = client.post("/api/finetune", json={"mask_id": mask["id"], "steps": 2, "seq_len": 16, "batch_size": 2, "data": "code"}).json()
    deadline = time.monotonic() + JOB_SECONDS
    while (status := client.get(f"/api/jobs/{job['id']}").json())["state"] not in ("done", "failed", "cancelled"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert status["state"] == "done", status["error"]
    # The same data as the module's comparison, which started from the plain base model.
    base_eval = json.loads((runs_dir / RUN_ID / "comparison.json").read_text())["eval_before"]
    assert client.get(f"/api/jobs/{job['id']}/result").json()["eval_before"]["loss"] == pytest.approx(base_eval["loss"], abs=1e-6)
    assert client.get("/api/model/deltas").json() == {"applied": applied}
    assert baseline_loss(client) == on
