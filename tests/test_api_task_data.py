"""Task data uploads through the real app on the tiny model: a JSONL file is checked row by
row (a bad line is named), kept under the runs folder within a size cap, and a fine-tune
that names its id trains on it in a run process of its own.

Expected splits are counted by hand (a fifth of the rows held out), and the stored file is
read back from disk, not from the API's answer."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from app.api.notebook_code import code_for
from app.api.settings import Settings
from outlier_core.load.models import LoadedModel

DOWN = "model.layers.1.mlp.down_proj.weight"
JOB_SECONDS = 180


def rows(n: int) -> list[dict]:
    return [{"prompt": f"Review {i}: the soup was {'warm' if i % 2 else 'cold'}. Verdict:", "completion": " zing" if i % 2 else " plok"} for i in range(n)]


def jsonl(items: list[dict]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in items).encode()


@pytest.fixture()
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture()
def client(tiny: LoadedModel, runs_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(runs_dir=runs_dir, max_task_data_bytes=4096), model=tiny)) as test_client:
        yield test_client


def upload(client: TestClient, name: str, content: bytes):
    return client.post("/api/task-data", files={"file": (name, content, "application/x-ndjson")})


def test_a_good_file_is_kept_with_its_split_and_found_again_by_its_bytes(client: TestClient, runs_dir: Path) -> None:
    content = jsonl(rows(10))
    response = upload(client, "my reviews.jsonl", content)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["id"].startswith("task-") and len(body["id"]) == 17
    assert (body["name"], body["rows"], body["train"], body["held_out"], body["bytes"]) == ("my_reviews.jsonl", 10, 8, 2, len(content))
    assert (runs_dir / "task_data" / body["id"] / "my_reviews.jsonl").read_bytes() == content
    assert upload(client, "my reviews.jsonl", content).json()["id"] == body["id"]  # the same file is the same upload
    assert client.get("/api/task-data").json()["uploads"] == [{"id": body["id"], "name": "my_reviews.jsonl", "bytes": len(content)}]


@pytest.mark.parametrize(
    "lines, named",
    [
        (['{"prompt": "a", "completion": "b"}', '{"prompt": "c", "completion": "d"}', '{"prompt": "e", "completion": '], "line 3 is not JSON"),
        (['{"prompt": "a", "completion": "b"}', "", '{"prompt": "c", "completion": "d"}', '{"prompt": "e"}'], "line 4 needs"),
        (['{"prompt": "a", "completion": "b"}', '["not", "an", "object"]'], "line 2 is not a JSON object"),
    ],
)
def test_a_bad_line_is_refused_naming_it_and_nothing_is_kept(client: TestClient, runs_dir: Path, lines: list[str], named: str) -> None:
    response = upload(client, "data.jsonl", "\n".join(lines).encode())
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "file" and named in response.json()["detail"] and "data.jsonl" in response.json()["detail"]
    assert client.get("/api/task-data").json()["uploads"] == []
    assert [p.name for p in (runs_dir / "task_data").iterdir()] == []  # the staging folder went too


def test_too_large_a_file_or_not_a_jsonl_file_is_refused(client: TestClient) -> None:
    big = jsonl(rows(100))
    assert len(big) > 4096
    too_large = upload(client, "big.jsonl", big)
    assert too_large.status_code == 413 and too_large.json()["field"] == "file" and "4,096" in too_large.json()["detail"]
    wrong_kind = upload(client, "data.csv", jsonl(rows(4)))
    assert wrong_kind.status_code == 422 and wrong_kind.json()["field"] == "file"


def test_a_finetune_naming_the_upload_trains_on_it(client: TestClient, runs_dir: Path) -> None:
    content = jsonl(rows(10))
    task = upload(client, "reviews.jsonl", content).json()
    mask = client.post("/api/masks", json={"name": "row", "parts": [{"parameter": DOWN, "kind": "rows", "index": [3]}]}).json()
    unknown = client.post("/api/finetune", json={"mask_id": mask["id"], "data": "task-000000000000", "steps": 1})
    assert unknown.status_code == 422 and unknown.json()["field"] == "data"
    neither = client.post("/api/finetune", json={"mask_id": mask["id"], "data": "poetry", "steps": 1})
    assert neither.status_code == 422 and neither.json()["field"] == "data" and "task-" in neither.json()["detail"]

    started = client.post("/api/finetune", json={"mask_id": mask["id"], "data": task["id"], "steps": 2, "batch_size": 2})
    assert started.status_code == 202, started.text
    assert started.json()["params"]["data"] == "reviews.jsonl"
    deadline = time.monotonic() + JOB_SECONDS
    while (status := client.get(f"/api/jobs/{started.json()['id']}").json())["state"] not in ("done", "failed", "cancelled"):
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.1)
    assert status["state"] == "done", status["error"]
    result = client.get(f"/api/jobs/{status['id']}/result").json()
    assert (result["data"]["source"], result["data"]["train_blocks"], result["data"]["held_out_blocks"]) == ("reviews.jsonl", 8, 2)
    [config] = [json.loads(p.read_text()) for p in runs_dir.rglob("run_config.json")]
    assert Path(config["data"]) == (runs_dir / "task_data" / task["id"] / "reviews.jsonl").resolve()


@pytest.mark.real
def test_chat_rows_are_checked_through_smollm2s_chat_template(smol: LoadedModel, tmp_path: Path) -> None:
    chat = [{"messages": [{"role": "user", "content": f"Is {i} odd?"}, {"role": "assistant", "content": "yes" if i % 2 else "no"}]} for i in range(5)]
    with TestClient(create_app(Settings(runs_dir=tmp_path / "runs"), model=smol)) as smol_client:
        good = upload(smol_client, "chat.jsonl", jsonl(chat))
        assert good.status_code == 201, good.text
        assert (good.json()["rows"], good.json()["train"], good.json()["held_out"]) == (5, 4, 1)
        no_reply = chat[:2] + [{"messages": [{"role": "user", "content": "Is 7 odd?"}, {"role": "user", "content": "Answer!"}]}]
        refused = upload(smol_client, "chat.jsonl", jsonl(no_reply))
        assert refused.status_code == 422 and "chat.jsonl line 3 must end with an \"assistant\" message" in refused.json()["detail"]


def test_a_task_file_runs_copied_command_trains_on_the_same_split(client: TestClient, tmp_path: Path) -> None:
    content = jsonl(rows(10))
    task = upload(client, "reviews.jsonl", content).json()
    mask = client.post("/api/masks", json={"name": "row", "parts": [{"parameter": DOWN, "kind": "rows", "index": [3]}]}).json()
    inputs = {"model": "tiny-random", "device": "cpu", "mask_id": mask["id"], "steps": 1, "lr": 1e-3, "baselines": [], "data": "task", "job": "j"}
    code = code_for("run", inputs)
    assert "save the JSONL task file you uploaded as my_task.jsonl" in code.note
    assert "train_data.load_data(model, 'my_task.jsonl', config)" in code.python

    (tmp_path / "my_task.jsonl").write_bytes(content)  # as the note says
    (tmp_path / "mask.safetensors").write_bytes(client.get(f"/api/masks/{mask['id']}/export", params={"format": "safetensors"}).content)
    command = shlex.split(code.cli)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OUTLIER_LAB_RUNS_DIR": str(tmp_path / "runs")}
    done = subprocess.run([sys.executable, "-m", "app.cli.main", *command[1:], "--batch-size", "2"], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(done.stdout)["data"]
    assert (data["source"], data["train_blocks"], data["held_out_blocks"]) == ("my_task.jsonl", task["train"], task["held_out"]) == ("my_task.jsonl", 8, 2)
