"""Mask edits through the real app: merge into a new mask (the originals stay), rename, remove one part."""

from __future__ import annotations

from typing import Iterator

import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from app.api.settings import Settings
from outlier_core.load.models import LoadedModel

DOWN = "model.layers.1.mlp.down_proj.weight"
NORM = "model.layers.1.post_attention_layernorm.weight"


@pytest.fixture()
def http(tiny: LoadedModel, tmp_path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(runs_dir=tmp_path), model=tiny)) as client:
        yield client


def made(http: TestClient, name: str, parameter: str, kind: str, index: list) -> dict:
    answer = http.post("/api/masks", json={"name": name, "parts": [{"parameter": parameter, "kind": kind, "index": index, "source": name}]})
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_merge_makes_a_new_mask_of_both_and_leaves_them_as_they_were(http: TestClient, tiny: LoadedModel) -> None:
    rows, entries = made(http, "rows", DOWN, "rows", [3, 7]), made(http, "norm", NORM, "entries", [[5]])
    answer = http.post("/api/masks/merge", json={"ids": [rows["id"], entries["id"]], "name": "both"})
    assert answer.status_code == 201
    both = answer.json()
    assert both["name"] == "both" and both["count"] == rows["count"] + entries["count"]
    assert [p["source"] for p in both["parts"]] == ["rows", "norm"]
    listed = {m["id"]: m["count"] for m in http.get("/api/masks").json()["masks"]}
    assert listed == {rows["id"]: rows["count"], entries["id"]: entries["count"], both["id"]: both["count"]}


def test_a_part_comes_out_and_a_mask_is_renamed(http: TestClient) -> None:
    rows = made(http, "rows", DOWN, "rows", [3, 7])
    both = http.post(f"/api/masks/{rows['id']}/parts", json={"parts": [{"parameter": NORM, "kind": "entries", "index": [[5]], "source": "click"}]}).json()
    assert len(both["parts"]) == 2
    left = http.delete(f"/api/masks/{rows['id']}/parts/0").json()
    assert [p["parameter"] for p in left["parts"]] == [NORM] and left["count"] == 1
    assert http.get(f"/api/masks/{rows['id']}").json()["count"] == 1
    assert http.delete(f"/api/masks/{rows['id']}/parts/5").status_code == 422
    renamed = http.patch(f"/api/masks/{rows['id']}", json={"name": "  one norm entry "}).json()
    assert renamed["name"] == "one norm entry"
    surrogate = b'{"name": "a\\ud800"}'  # JSON can carry a lone surrogate; a file name cannot
    assert http.patch(f"/api/masks/{rows['id']}", content=surrogate, headers={"content-type": "application/json"}).status_code == 422
    assert http.patch("/api/masks/nosuchmask", json={"name": "x"}).status_code == 404
