"""The vocabularies the API serves, checked against the core's own constants, and one layer's
weights in one request, checked against the per-parameter route and a hand computation."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict

import pytest
import torch
from fastapi.testclient import TestClient

from app.api.main import create_app
from app.api.routes import vocab as vocab_route
from app.api.settings import Settings
from outlier_core.load.models import LoadedModel
from outlier_core.load.sites import SITES, site_width
from outlier_core.observe.detect import INT8_RULE, PAPER_RULE, RELATIVE_RULE
from outlier_core.observe.tensor_stats import DEFAULT_K, WeightRule
from outlier_core.select.mask_rules import RULES, RuleConfig
from outlier_core.tune.methods import BASELINES, METHODS


@pytest.fixture()
def client(tiny: LoadedModel, tmp_path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(runs_dir=tmp_path / "runs"), model=tiny)) as test_client:
        yield test_client


def test_the_vocabularies_are_the_cores(client: TestClient, tiny: LoadedModel) -> None:
    vocab = client.get("/api/vocab").json()
    assert list(vocab["sites"]) == list(SITES)
    assert [s["hook"] for s in vocab["sites"].values()] == list(SITES.values())
    assert tiny.d_model != tiny.d_mlp  # so the widths below tell the two apart
    assert {site: getattr(tiny, s["width"]) for site, s in vocab["sites"].items()} == {site: site_width(tiny, site) for site in SITES}
    assert vocab["massive_rules"]["paper"] == {"label": "paper: |x| > 100 and > 1000 × median", "abs_threshold": PAPER_RULE.abs_threshold, "median_ratio": PAPER_RULE.median_ratio}
    assert vocab["massive_rules"]["relative"] == {"label": "relative: |x| > 300 × median (small models)", "abs_threshold": RELATIVE_RULE.abs_threshold, "median_ratio": RELATIVE_RULE.median_ratio}
    assert vocab["feature_rule"] == asdict(INT8_RULE)
    assert {kind: rule["k"] for kind, rule in vocab["weight_rules"].items()} == DEFAULT_K
    for kind, rule in vocab["weight_rules"].items():
        WeightRule(kind, rule["k"])  # each default is one the core accepts
    assert list(vocab["mask_rules"]) == list(RULES)
    RuleConfig(rules=tuple(vocab["mask_rules"]))
    assert list(vocab["methods"]) == list(METHODS)
    assert [name for name, m in vocab["methods"].items() if m["baseline"]] == list(BASELINES)


def test_every_name_the_core_knows_has_a_plain_label() -> None:
    """A name without a label would show as itself: fine for a new one, not for those known today."""
    assert set(SITES) == set(vocab_route.SITE_LABELS)
    assert set(DEFAULT_K) == set(vocab_route.WEIGHT_RULE_LABELS)
    assert set(RULES) == set(vocab_route.MASK_RULE_LABELS)
    assert set(METHODS) == set(vocab_route.METHOD_LABELS)


def test_the_vocabularies_need_no_model(tmp_path) -> None:
    """They answer while a model loads: the app below never starts loading one."""
    response = TestClient(create_app(Settings(runs_dir=tmp_path / "runs"))).get("/api/vocab")
    assert response.status_code == 200 and "resid_post" in response.json()["sites"]


def test_a_layers_weights_are_its_norms_in_full_and_its_matrices_by_name(client: TestClient, tiny: LoadedModel) -> None:
    query = {"rule": "sigma", "k": 2.0}
    layer = client.get("/api/weights/layers/2", params=query).json()
    norms = client.get("/api/weights", params={**query, "kinds": ["norm"], "layers": [2]}).json()["parameters"]
    matrices = client.get("/api/weights", params={**query, "kinds": ["matrix"], "layers": [2]}).json()["parameters"]
    assert [p["name"] for p in layer["norms"]] == [p["name"] for p in norms] and len(norms) == 2
    assert layer["matrices"] == [p["name"] for p in matrices]
    assert layer["norms"] == [client.get(f"/api/weights/{p['name']}", params=query).json() for p in norms]

    name = "model.layers.2.input_layernorm.weight"
    weight = dict(tiny.hf_parameters())[name].detach().double()
    by_hand = torch.nonzero((weight - weight.mean()).abs() > 2.0 * weight.std(unbiased=False)).flatten().tolist()
    shown = next(p for p in layer["norms"] if p["name"] == name)
    assert sorted(o["index"][0] for o in shown["outliers"]["listed"]) == sorted(by_hand)
    assert sum(shown["histogram"]["counts"]) == weight.numel()


def test_a_layer_out_of_range_is_refused_naming_the_field(client: TestClient, tiny: LoadedModel) -> None:
    response = client.get(f"/api/weights/layers/{tiny.n_layers}")
    assert response.status_code == 422 and response.json()["field"] == "layer"
