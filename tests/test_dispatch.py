"""The tiny model spread over a device map (accelerate `dispatch_model`: layers on the CPU and
layers offloaded to disk, whose parameters sit on the meta device between forwards) answers
exactly what the single-device model does: scan, origin, interventions with their mean
references, weight edits (on an offloaded layer too), weight statistics, mask suggestions
that read the norm weights, and a fine-tune run's sparse deltas attached, detached and merged.

A CPU has one device, so this checks the offload machinery and that nothing reads an
offloaded layer's meta tensors; hooks that combine tensors across GPUs are kept to
`tensor.device` by construction (see outlier_core/load/placement.py).
"""

from __future__ import annotations

import json
import time

import pytest
import torch
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
from outlier_core.select import mask_rules
from outlier_core.select.masks import SelectionMask
from outlier_core.tune import train_data
from outlier_core.tune.applied_run import attach_run
from outlier_core.tune.comparison import compare
from outlier_core.tune.snapshot import outlier_snapshot

TEXT = "A small boat crossed the bay at dawn, and the gulls followed it home."
OFFLOADED_DOWN = "model.layers.1.mlp.down_proj.weight"
OFFLOADED_NORM = "model.layers.3.post_attention_layernorm.weight"
IDS = torch.tensor([[1, 72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100, 33, 10]])
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


def spread_model(tmp_path_factory):
    return load_model("tiny-random", placement=Placement(DEVICE_MAP, offload_folder=str(tmp_path_factory.mktemp("offload"))))


@pytest.fixture(scope="module")
def spread(tmp_path_factory):
    return spread_model(tmp_path_factory)


@pytest.fixture(scope="module")
def run_folder(single, tmp_path_factory):
    """A real sparse fine-tune on the single-device model, its mask on offloaded and CPU layers."""
    mask = (
        SelectionMask.empty(single, "clicks")
        .add(single, OFFLOADED_DOWN, "rows", [3, 7], "click")
        .add(single, OFFLOADED_NORM, "entries", [[5], [17]], "click")
        .add(single, "model.layers.0.mlp.up_proj.weight", "columns", [2], "click")
    )
    config = train_data.TrainConfig(steps=3, lr=0.05, batch_size=2, seq_len=16)
    folder = tmp_path_factory.mktemp("runs") / "20990101-000000-abcdef"
    compare(single, mask, (), train_data.make_data(single, train_data.load_corpus("code"), config), config, folder)
    return folder


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.bridge(IDS, return_type="logits")  # (1, T, V)


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


def test_mask_suggestion_from_norm_weights_equals_single_device(single, spread):
    """The norm rule reads the offloaded layers' norm weights (a loose k so the tiny model's have outliers)."""
    config = mask_rules.RuleConfig(rules=("norm_outliers",), norm_rule=mask_rules.WeightRule("sigma", 1.5))
    ours = mask_rules.suggest_mask(spread, mask_rules.prompt_from_text(spread, TEXT), 60, config)
    reference = mask_rules.suggest_mask(single, mask_rules.prompt_from_text(single, TEXT), 60, config)
    assert any(p.parameter.startswith(("model.layers.1.", "model.layers.3.")) for p in reference.mask.parts)
    assert to_json(ours) == to_json(reference)


def test_outlier_snapshot_equals_single_device(single, spread):
    """The fine-tune's before/after snapshot reads the offloaded layers' norm weights (one planted there)."""
    planted = WeightEdit(OFFLOADED_NORM, (5,), "set", 9.0)
    with edited_weights(spread, [planted]), edited_weights(single, [planted]):
        ours = outlier_snapshot(spread, mask_rules.prompt_from_text(spread, TEXT))
        assert ours == outlier_snapshot(single, mask_rules.prompt_from_text(single, TEXT))
    assert {"parameter": OFFLOADED_NORM, "index": 5, "value": 9.0} in [{k: o[k] for k in ("parameter", "index", "value")} for o in ours["norm_outliers"]]


def test_a_runs_deltas_on_offloaded_layers_give_the_single_device_logits(single, spread, run_folder):
    base = logits(spread)
    reference = attach_run(single, run_folder, "mask")
    try:
        expected = logits(single)
    finally:
        reference.detach()
    assert not torch.allclose(expected, base, atol=1e-4)  # the run moved something
    applied = attach_run(spread, run_folder, "mask")
    try:
        assert torch.equal(logits(spread), expected)
        applied.set_enabled(False)
        assert torch.equal(logits(spread), base)
        applied.set_enabled(True)
        assert torch.equal(logits(spread), expected)
    finally:
        applied.detach()
    assert torch.equal(logits(spread), base)
    assert spread.hf_parameters()[OFFLOADED_DOWN].device.type == "meta"  # given back to its offload hook


def test_merging_a_runs_deltas_into_offloaded_layers(single, run_folder, tmp_path_factory):
    own = spread_model(tmp_path_factory)  # a merge changes it for good
    reference = attach_run(single, run_folder, "mask")
    try:
        expected = logits(single)
    finally:
        reference.detach()
    attach_run(own, run_folder, "mask").merge()
    assert own.hf_parameters()[OFFLOADED_NORM].device.type == "meta"
    assert torch.equal(logits(own), expected)


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
