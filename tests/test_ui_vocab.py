"""The UI's choices come from the API's vocabularies, the weights page reads a layer in one
request, and one helper reads the overview's cached scan; callbacks called directly against
the real API app with the tiny model injected."""

from __future__ import annotations

import importlib
from typing import Iterator

import dash
import pytest
import torch
from fastapi.testclient import TestClient

from app.api.main import create_app as create_api
from app.api.settings import Settings
from app.ui import state
from app.ui.app import create_app
from app.ui.components import CLIENT_ATTRIBUTE
from outlier_core.load.models import LoadedModel
from outlier_core.tune.methods import BASELINES
from tests.ui_helpers import page

TEXT = "Tiny models still have residual streams."
pytestmark = pytest.mark.filterwarnings("ignore:You should not use the 'timeout' argument with the TestClient")


@pytest.fixture(scope="module")
def ui(tiny: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dash.Dash]:
    with TestClient(create_api(Settings(max_tokens=256, runs_dir=tmp_path_factory.mktemp("runs")), model=tiny)) as http:
        yield create_app("http://testserver", http=http)


@pytest.fixture()
def vocab(ui: dash.Dash) -> dict:
    shell = importlib.import_module("app.ui.app")
    return shell.fetch_vocab(shell.poll_health(1, None), None)


def test_the_shell_fetches_the_vocabulary_once_the_api_answers(ui: dash.Dash, vocab: dict) -> None:
    shell = importlib.import_module("app.ui.app")
    assert "resid_post" in vocab["sites"] and "relative" in vocab["massive_rules"]
    assert shell.fetch_vocab({"reachable": True}, vocab) is dash.no_update  # once per page load
    assert shell.fetch_vocab({"reachable": False}, None) is dash.no_update


def test_the_pages_offer_the_vocabulary(ui: dash.Dash, vocab: dict) -> None:
    sites, rules = page("overview").offer_sites_and_rules(vocab)
    assert [o["value"] for o in sites] == list(vocab["sites"])
    assert {o["value"]: o["label"] for o in rules} == {"paper": "paper: |x| > 100 and > 1000 × median", "relative": "relative: |x| > 300 × median (small models)"}
    assert page("layer").offer_sites(vocab) == sites
    assert [page("weights").default_k(rule, vocab) for rule in ("sigma", "percentile", "mad")] == [3.0, 99.0, 3.0]
    mask_rules, ticked = page("selection").offer_rules(vocab)
    assert ticked == [o["value"] for o in mask_rules] == list(vocab["mask_rules"])
    assert [o["value"] for o in page("finetune").offer_baselines(vocab)] == list(BASELINES)  # the registry's, in its order
    assert page("overview").offer_sites_and_rules(None) == (dash.no_update, dash.no_update)  # nothing before it arrives
    assert page("weights").default_k("sigma", None) is dash.no_update


def test_the_cached_scan_is_read_by_what_it_was_computed_from() -> None:
    prompt, model = {"text": TEXT, "prepend_bos": True}, {"name": "tiny-random", "deltas": None}
    cached = state.scan_cache({"massive": []}, prompt, model, "resid_post", "paper")
    assert cached["key"][:2] == [TEXT, True]
    assert state.cached_scan(cached, prompt, model, "resid_post", "paper") == {"massive": []}
    assert state.cached_scan(cached, prompt, model) == {"massive": []}  # any site and rule
    assert state.cached_scan(cached, prompt, model, "resid_pre", "paper") is None
    assert state.cached_scan(cached, prompt, model, "resid_post", "relative") is None
    assert state.cached_scan(cached, {**prompt, "prepend_bos": False}, model) is None
    applied = {**model, "deltas": {"run": "r", "method": "mask", "enabled": True, "merged": False}}
    assert state.cached_scan(cached, prompt, applied) is None
    assert state.cached_scan(None, prompt, model) is None


def test_a_layers_norms_take_one_request(ui: dash.Dash, tiny: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    client = getattr(ui, CLIENT_ATTRIBUTE)
    paths: list[str] = []
    call = client._call
    monkeypatch.setattr(client, "_call", lambda method, path, **kwargs: paths.append(path) or call(method, path, **kwargs))
    summary = {"at_dims": [], "marked": []}
    graphs, listed_table, listed, options, matrix = page("weights").show_layer_norms(summary, 2, "sigma", 2.0, None)
    assert paths == ["/api/weights/layers/2"]

    names = [f"model.layers.2.{norm}.weight" for norm in ("input_layernorm", "post_attention_layernorm")]
    assert [g.children.id["name"] for g in graphs] == names
    weights = dict(tiny.hf_parameters())
    by_hand = []
    for name in names:
        w = weights[name].detach().double()
        by_hand += [(name, d) for d in torch.nonzero((w - w.mean()).abs() > 2.0 * w.std(unbiased=False)).flatten().tolist()]
    assert sorted((e["parameter"], e["dim"]) for e in listed) == sorted(by_hand)
    assert [o["value"] for o in options] == [n for n in weights if n.startswith("model.layers.2.") and n.endswith("proj.weight")]
    assert matrix == "model.layers.2.mlp.down_proj.weight"  # where super weights live
