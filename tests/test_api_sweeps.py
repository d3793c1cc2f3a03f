"""Sweeps through the real app on the tiny model: a sweep started over HTTP runs in its own
process, reports its trials, summary and Pareto points, serves its tables and plots, is one
at a time, is found again by its config, and can be cancelled."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from app.api.settings import Settings
from outlier_core.load.models import LoadedModel

SMALL = {"budgets": [64], "methods": ["mask", "ln_top"], "seeds": [0], "steps": 2, "batch_size": 2, "held_out": 4, "eval_limit": 4}


@pytest.fixture()
def client(tiny: LoadedModel, tmp_path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(runs_dir=tmp_path / "runs"), model=tiny)) as test_client:
        yield test_client


def wait_for(client: TestClient, sweep_id: str, states: tuple[str, ...], timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/api/sweeps/{sweep_id}").json()
        if body["state"] in states:
            return body
        time.sleep(0.5)
    raise AssertionError(f"sweep {sweep_id} never reached {states}: {body['state']}")


def test_a_sweep_over_http_runs_reports_and_serves_its_files(client: TestClient) -> None:
    started = client.post("/api/sweeps", json=SMALL)
    assert started.status_code == 202, started.text
    body = started.json()
    assert body["state"] == "running" and body["model"] == "tiny-random" and body["trials"] == 2 and body["done"] == 0
    assert [(t["method"], t["budget"], t["seed"]) for t in body["trial_views"]] == [("mask", 64, 0), ("ln_top", 64, 0)]
    other = client.post("/api/sweeps", json={**SMALL, "seeds": [1]})
    assert other.status_code == 409 and other.json()["field"] == "budgets"  # one sweep at a time
    done = wait_for(client, body["id"], ("done", "failed", "interrupted"))
    assert done["state"] == "done" and done["done"] == 2, done
    assert all(t["state"] == "done" and t["metrics"]["outlier_reviews.acc"] >= 0 for t in done["trial_views"])
    assert done["metric"] == "outlier_reviews.acc"
    assert {p["method"] for p in done["pareto"]["trainable"]} == {"mask", "ln_top"}
    assert any(p["on_front"] for p in done["pareto"]["peak_memory_mb"])
    assert {r["metric"] for r in done["summary"]} >= {"outlier_reviews.acc", "held_out_loss", "trainable"}
    assert {"summary.csv", "summary.md", "pareto_trainable.png", "pareto_trainable.svg"} <= set(done["files"])
    png = client.get(f"/api/sweeps/{body['id']}/files/pareto_trainable.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
    assert client.get(f"/api/sweeps/{body['id']}/files/summary.csv").text.startswith("method,budget,setting,metric,n,mean,std,ci_low,ci_high")
    assert client.get(f"/api/sweeps/{body['id']}/files/run.log").status_code == 404
    listed = client.get("/api/sweeps").json()["sweeps"]
    assert [(s["id"], s["state"], s["done"]) for s in listed] == [(body["id"], "done", 2)]
    again = client.post("/api/sweeps", json=SMALL).json()  # the same grid is the same sweep: nothing reruns
    assert again["id"] == body["id"] and again["state"] == "done" and [t["launches"] for t in again["trial_views"]] == [1, 1]


def test_a_running_sweep_can_be_cancelled(client: TestClient) -> None:
    body = client.post("/api/sweeps", json={**SMALL, "methods": ["random"], "steps": 100_000}).json()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        trial = client.get(f"/api/sweeps/{body['id']}").json()["trial_views"][0]
        if trial["progress"] and trial["progress"]["step"] >= 1:
            break
        time.sleep(0.5)
    assert trial["progress"]["total"] == 100_000
    client.post(f"/api/sweeps/{body['id']}/cancel")
    ended = wait_for(client, body["id"], ("cancelled", "failed", "done", "interrupted"), timeout=120)
    assert ended["state"] == "cancelled" and ended["trial_views"][0]["state"] == "cancelled"


@pytest.mark.parametrize(
    "change, field",
    [({"methods": ["dora"]}, "methods"), ({"budgets": []}, "budgets"), ({"budgets": list(range(1, 17)), "seeds": list(range(13))}, "budgets"), ({"extra": 1}, "extra")],
)
def test_bad_sweeps_are_refused_naming_the_field(client: TestClient, change: dict, field: str) -> None:
    response = client.post("/api/sweeps", json={**SMALL, **change})
    assert response.status_code == 422 and field in response.json()["field"]


def test_an_unknown_sweep_is_404(client: TestClient) -> None:
    assert client.get("/api/sweeps/sweep-000000000000").status_code == 404
    assert client.get("/api/sweeps/..%2Fetc").status_code == 404
    assert client.get("/api/sweeps/sweep-000000000000/files/summary.csv").status_code == 404


def test_a_sweep_on_uploaded_task_data_trains_and_scores_on_it(client: TestClient, tmp_path: Path) -> None:
    content = "".join(f'{{"prompt": "Item {i} is", "completion": " {"odd" if i % 2 else "even"}"}}\n' for i in range(15)).encode()
    task = client.post("/api/task-data", files={"file": ("parity.jsonl", content)}).json()
    assert client.post("/api/sweeps", json={**SMALL, "data": "task-000000000000"}).json()["field"] == "data"
    body = client.post("/api/sweeps", json={**SMALL, "methods": ["mask"], "data": task["id"]}).json()
    assert body["config"]["data"].endswith(f"/task_data/{task['id']}/parity.jsonl") and body["config"]["eval_tasks"] == []  # no lm-eval task for an upload
    done = wait_for(client, body["id"], ("done", "failed", "interrupted"))
    assert done["state"] == "done", done
    assert done["metric"] == "held_out_loss" and done["trial_views"][0]["metrics"]["held_out_loss"] > 0
    result = json.loads((tmp_path / "runs" / "sweeps" / done["trial_views"][0]["folder"] / "result.json").read_text())  # folders are the store's
    assert (result["data"]["source"], result["data"]["train_blocks"], result["data"]["held_out_blocks"]) == ("parity.jsonl", 12, 3)  # a fifth of 15 held out
