"""The tiny model spread over a device map (accelerate `dispatch_model`: layers on the CPU and
layers offloaded to disk, whose parameters sit on the meta device between forwards) answers
exactly what the single-device model does: scan, origin, interventions with their mean
references, weight edits (on an offloaded layer too), weight statistics.

A CPU has one device, so this checks the offload machinery and that nothing reads an
offloaded layer's meta tensors; hooks that combine tensors across GPUs are kept to
`tensor.device` by construction (see outlier_core/load/placement.py).
"""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from app.api.settings import Settings
from outlier_core.contract import to_json
from outlier_core.errors import InputError
from outlier_core.intervene.evaluate import evaluate
from outlier_core.intervene.interventions import Intervention
from outlier_core.intervene.weight_edits import WeightEdit, edited_weights
from outlier_core.load.models import load_model
from outlier_core.load.placement import Placement, parse_device_map
from outlier_core.observe.capture import scan
from outlier_core.observe.origin import trace_origin
from outlier_core.observe.weights import model_weight_stats, norm_at_dims

TEXT = "A small boat crossed the bay at dawn, and the gulls followed it home."
OFFLOADED_DOWN = "model.layers.1.mlp.down_proj.weight"
DEVICE_MAP = {
    "model.embed_tokens": "cpu",
    "model.rotary_emb": "cpu",
    "model.layers.0": "cpu",
    "model.layers.1": "disk",
    "model.layers.2": "cpu",
    "model.layers.3": "disk",
    "model.norm": "cpu",
    "lm_head": "cpu",
}


@pytest.fixture(scope="module")
def single():
    return load_model("tiny-random", device="cpu")


@pytest.fixture(scope="module")
def spread(tmp_path_factory):
    return load_model("tiny-random", placement=Placement(DEVICE_MAP, offload_folder=str(tmp_path_factory.mktemp("offload"))))


def test_layers_are_really_offloaded(spread):
    params = spread.hf_parameters()
    assert params[OFFLOADED_DOWN].device.type == "meta"
    assert params["model.layers.0.mlp.down_proj.weight"].device.type == "cpu"
    assert spread.device == "cpu" and set(spread.devices) == {"cpu", "disk"}


def test_scan_equals_single_device(single, spread):
    assert to_json(scan(spread, TEXT)) == to_json(scan(single, TEXT))


def test_origin_equals_single_device(single, spread):
    for layer in (1, 3):  # both offloaded: the down-projection row comes from the offload files
        assert to_json(trace_origin(spread, TEXT, layer, 0, 5)) == to_json(trace_origin(single, TEXT, layer, 0, 5))


def test_interventions_and_weight_edits_equal_single_device(single, spread):
    ivs = [Intervention(1, 0, [3, 7], "mean"), Intervention(3, "all", 5, "scale", 4.0)]
    edits = [WeightEdit(OFFLOADED_DOWN, (5, "all"), "scale", 3.0), WeightEdit("model.layers.2.mlp.down_proj.weight", (1, 2), "set", 2.5)]
    assert to_json(evaluate(spread, TEXT, ivs, edits, seed=1)) == to_json(evaluate(single, TEXT, ivs, edits, seed=1))


def test_weight_edit_on_offloaded_layer_changes_then_restores(single, spread):
    before = to_json(scan(spread, TEXT))
    with edited_weights(spread, [WeightEdit(OFFLOADED_DOWN, ("all", "all"), "zero")]):
        during = to_json(scan(spread, TEXT))
        with edited_weights(single, [WeightEdit(OFFLOADED_DOWN, ("all", "all"), "zero")]):
            assert during == to_json(scan(single, TEXT))
    assert during != before
    assert to_json(scan(spread, TEXT)) == before
    assert spread.hf_parameters()[OFFLOADED_DOWN].device.type == "meta"  # still offloaded


def test_weight_statistics_equal_single_device(single, spread):
    assert to_json(model_weight_stats(spread, layers=(1, 2))) == to_json(model_weight_stats(single, layers=(1, 2)))
    assert to_json(norm_at_dims(spread, [3, 9])) == to_json(norm_at_dims(single, [3, 9]))


@pytest.mark.parametrize("text, expected", [
    ("auto", "auto"),
    ('{"model.layers.0": 0, "lm_head": "cpu"}', {"model.layers.0": 0, "lm_head": "cpu"}),
])
def test_device_map_setting_parses(text, expected):
    placement = parse_device_map(text, '{"0": "70GiB", "cpu": "100GiB"}')
    assert placement.device_map == expected and placement.max_memory == {0: "70GiB", "cpu": "100GiB"}
    assert parse_device_map(None) is None and parse_device_map("") is None


@pytest.mark.parametrize("text", ["everywhere", "[1, 2]", "{}", "{not json"])
def test_bad_device_map_is_refused(text):
    with pytest.raises(InputError) as err:
        parse_device_map(text)
    assert err.value.field == "device_map"


def test_device_and_device_map_are_exclusive():
    with pytest.raises(ValueError):
        load_model("tiny-random", device="cpu", placement=Placement("auto"))


def test_server_setting_spreads_the_served_model(monkeypatch, tmp_path, single):
    """OUTLIER_LAB_DEVICE_MAP: the server loads its model spread, and serves what one device would."""
    monkeypatch.setenv("OUTLIER_LAB_DEVICE_MAP", json.dumps(DEVICE_MAP))
    monkeypatch.setenv("OUTLIER_LAB_OFFLOAD_FOLDER", str(tmp_path / "offload"))
    settings = Settings(model="tiny-random", runs_dir=tmp_path / "runs")
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 60
        while client.get("/api/health").json()["loading"] is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/api/health").json()["ready"]
        body = client.post("/api/scan", json={"text": TEXT}).json()
    assert body == to_json(scan(single, TEXT))
