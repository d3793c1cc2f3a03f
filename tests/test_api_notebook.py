"""The lab notebook through the real app: entries per session, export as JSON and CSV, and
copy-as-code whose command, run in a shell, prints the numbers the entry recorded."""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from app.api.notebook_code import code_for
from app.api.settings import Settings
from outlier_core.load.models import LoadedModel

SESSION = "a1b2c3d4-session"
TEXT = "Tiny models still have residual streams."
STACK = [{"layer": 1, "site": "resid_post", "position": 3, "dim": 5, "mode": "zero", "value": None},
         {"layer": 2, "site": "resid_post", "position": 4, "dim": 7, "mode": "zero", "value": None}]


@pytest.fixture()
def http(tiny: LoadedModel, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(runs_dir=tmp_path), model=tiny)) as client:
        yield client


def test_entries_belong_to_their_session_and_export_as_json_and_csv(http: TestClient, tmp_path: Path) -> None:
    scan = {"model": "tiny-random", "text": TEXT, "prepend_bos": True, "site": "resid_post", "rule": "relative"}
    first = http.post("/api/notebook", json={"session": SESSION, "kind": "scan", "title": "scan", "inputs": scan, "results": {"massive": 0}})
    assert first.status_code == 201
    assert first.json()["code"]["cli"].startswith("outlier-lab scan --model tiny-random --device cpu --text 'Tiny models")
    http.post("/api/notebook", json={"session": "someone-else", "kind": "scan", "title": "theirs", "inputs": scan})
    listed = http.get("/api/notebook", params={"session": SESSION}).json()["entries"]
    assert [e["title"] for e in listed] == ["scan"]
    assert (tmp_path / "sweeps" / "sweeps.sqlite").is_file()  # beside the experiments

    exported = json.loads(http.get("/api/notebook/export", params={"session": SESSION, "format": "json"}).text)
    assert exported["entries"][0]["inputs"] == scan
    rows = list(csv.DictReader(io.StringIO(http.get("/api/notebook/export", params={"session": SESSION, "format": "csv"}).text)))
    assert rows[0]["kind"] == "scan" and json.loads(rows[0]["inputs"]) == scan and rows[0]["cli"].startswith("outlier-lab scan")

    assert http.delete(f"/api/notebook/{listed[0]['id']}", params={"session": "someone-else"}).status_code == 404
    assert http.delete(f"/api/notebook/{listed[0]['id']}", params={"session": SESSION}).status_code == 204
    assert http.get("/api/notebook", params={"session": "bad session!"}).status_code == 422
    huge = http.post("/api/notebook", json={"session": SESSION, "kind": "scan", "title": "x", "inputs": {"text": "x" * 300_000}})
    assert huge.status_code == 413


def test_a_stack_mixing_modes_has_a_python_call_but_no_command() -> None:
    mixed = code_for("intervene", {"model": "tiny-random", "text": TEXT, "interventions": [STACK[0], {**STACK[1], "mode": "scale", "value": 0.5}]})
    assert mixed.cli is None and "mixes" in mixed.note and "mode='scale', value=0.5" in mixed.python
    on_prose = code_for("intervene", {"model": "tiny-random", "text": TEXT, "interventions": STACK, "eval_corpus": "prose"})
    assert on_prose.cli is None and "eval_text=bundled('prose')" in on_prose.python


def test_copy_as_code_run_in_a_shell_prints_the_numbers_the_api_computed(http: TestClient) -> None:
    body = {"text": TEXT, "prepend_bos": True, "interventions": STACK}
    result = http.post("/api/intervene", json=body).json()
    inputs = {"model": "tiny-random", "device": "cpu", **body}
    entry = http.post("/api/notebook", json={"session": SESSION, "kind": "intervene", "title": "two zeros", "inputs": inputs, "results": {}}).json()
    command = shlex.split(entry["code"]["cli"])
    assert command[0] == "outlier-lab"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "app.cli.main", *command[1:]], capture_output=True, text=True, env=env, timeout=300, check=True)
    printed = json.loads(done.stdout)
    for key in ("baseline", "intervened", "control"):
        assert printed[key]["perplexity"] == pytest.approx(result[key]["perplexity"], rel=1e-5)

    script = entry["code"]["python"]
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, check=True)
    baseline, intervened, control = map(float, ran.stdout.split())
    assert (baseline, intervened, control) == pytest.approx([result[k]["perplexity"] for k in ("baseline", "intervened", "control")], rel=1e-5)


DOWN = "model.layers.1.mlp.down_proj.weight"
JOB_SECONDS = 300


def entry_of(http: TestClient, entry_id: str) -> dict:
    return next(e for e in http.get("/api/notebook", params={"session": SESSION}).json()["entries"] if e["id"] == entry_id)


def test_a_run_entry_gets_its_jobs_final_numbers_and_config_once_the_job_ends(http: TestClient) -> None:
    import time

    mask = http.post("/api/masks", json={"name": "rows", "parts": [{"parameter": DOWN, "kind": "rows", "index": [3]}]}).json()
    body = {"mask_id": mask["id"], "baselines": ["random"], "steps": 2, "lr": 0.002, "seq_len": 16, "batch_size": 2, "seed": 5, "data": "code"}
    job = http.post("/api/finetune", json=body).json()
    inputs = {"model": "tiny-random", "device": "cpu", **body, "job": job["id"]}
    entry = http.post("/api/notebook", json={"session": SESSION, "kind": "run", "title": "fine-tune", "inputs": inputs, "results": {"job": job["id"]}}).json()
    assert entry["results"] == {"job": job["id"]}  # nothing final while it runs

    deadline = time.monotonic() + JOB_SECONDS
    while (status := http.get(f"/api/jobs/{job['id']}").json())["state"] not in ("done", "failed", "cancelled"):
        assert time.monotonic() < deadline, "the job never ended"
        time.sleep(0.1)
    assert status["state"] == "done", status["error"]
    result = http.get(f"/api/jobs/{job['id']}/result").json()

    final = entry_of(http, entry["id"])["results"]["final"]
    assert final["state"] == "done" and final["step"] == final["total"] == 4 and final["error"] is None
    assert final["run_id"] == Path(result["folder"]).name
    assert final["config"] == result["config"] and final["eval_before"] == result["eval_before"]
    assert [(r["method"], r["final_loss"], r["eval_after"]) for r in final["runs"]] == [
        (r["method"], r["train_loss"][-1], r["eval_after"]) for r in result["runs"]]
    command = entry_of(http, entry["id"])["code"]["cli"]
    for flag in ("--data code", "--steps 2", "--lr 0.002", "--seq-len 16", "--batch-size 2", "--seed 5", "--baseline random"):
        assert flag in command  # the run's own config, not the CLI's defaults
    exported = json.loads(http.get("/api/notebook/export", params={"session": SESSION, "format": "json"}).text)
    assert exported["entries"][0]["results"]["final"] == final  # stored, not only shown


def run_python(script: str, cwd: Path) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, check=True, cwd=cwd).stdout


def test_hand_built_merged_and_imported_masks_have_code_that_gives_the_apis_count(http: TestClient, tmp_path: Path) -> None:
    parts = [{"parameter": DOWN, "kind": "rows", "index": [3, 9]}]
    dims = [{"layer": 2, "dim": 7}]
    built = http.post("/api/masks", json={"name": "clicks", "parts": parts, "dims": dims}).json()
    build = code_for("mask", {"model": "tiny-random", "device": "cpu", "build": {"parts": parts, "dims": dims, "onto": None, "name": "clicks"}, "mask_id": built["id"]})
    assert int(run_python(build.python, tmp_path)) == built["count"]
    shown = subprocess.run([sys.executable, "-m", "app.cli.main", *shlex.split(build.cli)[1:]], capture_output=True, text=True, timeout=300, check=True, cwd=tmp_path)
    assert json.loads(shown.stdout)["count"] == built["count"]  # the command shows what the Python call wrote

    def export(mask: dict) -> None:  # as Export JSON on the Selection page, saved under the name the code gives
        (tmp_path / f"mask-{mask['id']}.json").write_text(http.get(f"/api/masks/{mask['id']}/export", params={"format": "json"}).text)

    export(built)  # before it is extended: the code starts from the mask as it was
    more = [{"parameter": "model.layers.0.input_layernorm.weight", "kind": "entries", "index": [[1], [2]]}]
    extended = http.post(f"/api/masks/{built['id']}/parts", json={"parts": more}).json()
    onto = code_for("mask", {"model": "tiny-random", "build": {"parts": more, "dims": [], "onto": built["id"]}, "mask_id": extended["id"]})
    assert extended["count"] == built["count"] + 2 and int(run_python(onto.python, tmp_path)) == extended["count"]

    other = http.post("/api/masks", json={"name": "other", "parts": [{"parameter": DOWN, "kind": "rows", "index": [9, 11]}]}).json()
    merged = http.post("/api/masks/merge", json={"ids": [built["id"], other["id"]], "name": "both"}).json()
    export(built)
    export(other)
    merge = code_for("mask", {"model": "tiny-random", "merge": {"ids": [built["id"], other["id"]], "name": "both"}, "mask_id": merged["id"]})
    assert merge.cli is None and "does not merge" in merge.note
    assert int(run_python(merge.python, tmp_path)) == merged["count"]

    (tmp_path / "upload.json").write_text(http.get(f"/api/masks/{merged['id']}/export", params={"format": "json"}).text)
    imported = http.post("/api/masks/import", files={"file": ("upload.json", (tmp_path / "upload.json").read_bytes())}).json()
    code = code_for("mask", {"model": "tiny-random", "import": {"filename": "upload.json"}, "mask_id": imported["id"]})
    assert int(run_python(code.python, tmp_path)) == imported["count"]
    shown = subprocess.run([sys.executable, "-m", "app.cli.main", *shlex.split(code.cli)[1:]], capture_output=True, text=True, timeout=300, check=True, cwd=tmp_path)
    assert json.loads(shown.stdout)["count"] == imported["count"]
