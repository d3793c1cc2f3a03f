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
