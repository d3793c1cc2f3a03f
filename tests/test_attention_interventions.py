"""Attention patterns with interventions applied: the core capture and POST /api/attention.

The reference is a plain Hugging Face copy of the tiny model built separately: a forward
hook on a decoder layer zeroes the same coordinates, and eager attention returns the
patterns.
"""

from __future__ import annotations

from typing import Iterator

import pytest
import torch
from fastapi.testclient import TestClient

from app.api.main import create_app
from app.api.settings import Settings
from outlier_core.errors import InputError
from outlier_core.intervene.interventions import Intervention, attention_patterns_under
from outlier_core.load.models import LoadedModel
from outlier_core.observe.capture import attention_patterns

TEXT = "Tiny models still have residual streams."
LAYER = 1  # the zeroed decoder layer's output (resid_post)
POSITION, DIM = 5, 17  # an ordinary coordinate, away from the first token


@pytest.fixture(scope="module")
def client(tiny: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(max_tokens=128, runs_dir=tmp_path_factory.mktemp("runs")), model=tiny)) as test_client:
        yield test_client


def byte_ids(hf: torch.nn.Module, text: str) -> torch.Tensor:
    tokenizer = hf.byte_tokenizer
    return torch.tensor([[tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False).input_ids])


def hf_patterns(hf: torch.nn.Module, ids: torch.Tensor, zero: list[tuple[int, slice | int]] = ()) -> tuple[torch.Tensor, ...]:
    """Every layer's (H, T, T) pattern; `zero` lists (position, dims) of decoder layer LAYER's output to set to 0."""

    def hook(module, args, output):
        hidden = (output[0] if isinstance(output, tuple) else output).clone()
        for position, dims in zero:
            hidden[0, position, dims] = 0.0
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = hf.model.layers[LAYER].register_forward_hook(hook)
    try:
        with torch.no_grad():
            attentions = hf(ids, output_attentions=True).attentions
    finally:
        handle.remove()
    return tuple(a[0] for a in attentions)


# --- core ------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern_layer", [2, 3])
def test_patterns_under_zero_interventions_match_plain_hf(tiny: LoadedModel, hf_tiny: torch.nn.Module, pattern_layer: int) -> None:
    ids = byte_ids(hf_tiny, TEXT)
    stack = [Intervention(LAYER, POSITION, DIM, "zero"), Intervention(LAYER, 0, "all", "zero")]
    after = attention_patterns_under(tiny, TEXT, pattern_layer, stack).pattern  # (H, T, T)
    reference = hf_patterns(hf_tiny, ids, zero=[(POSITION, DIM), (0, slice(None))])[pattern_layer]
    plain = hf_patterns(hf_tiny, ids)[pattern_layer]
    assert (reference - plain).abs().max() > 1e-2  # the intervention visibly moves the pattern ...
    assert after == pytest.approx(reference, abs=1e-5)  # ... and the capture moves it the same way
    assert attention_patterns(tiny, TEXT, pattern_layer).pattern == pytest.approx(plain, abs=1e-5)  # and leaves no hook behind


def test_one_coordinate_alone_matches_plain_hf(tiny: LoadedModel, hf_tiny: torch.nn.Module) -> None:
    ids = byte_ids(hf_tiny, TEXT)
    after = attention_patterns_under(tiny, TEXT, 2, [Intervention(LAYER, POSITION, DIM)]).pattern
    reference = hf_patterns(hf_tiny, ids, zero=[(POSITION, DIM)])[2]
    assert (reference - hf_patterns(hf_tiny, ids)[2]).abs().max() > 1e-3
    assert after == pytest.approx(reference, abs=1e-5)


def test_an_intervention_after_the_captured_layer_changes_nothing(tiny: LoadedModel, hf_tiny: torch.nn.Module) -> None:
    after = attention_patterns_under(tiny, TEXT, LAYER, [Intervention(LAYER, 0, "all")]).pattern
    assert after == pytest.approx(hf_patterns(hf_tiny, byte_ids(hf_tiny, TEXT))[LAYER], abs=1e-5)


def test_mean_without_reference_means_is_refused(tiny: LoadedModel) -> None:
    with pytest.raises(InputError) as refused:
        attention_patterns_under(tiny, TEXT, 2, [Intervention(LAYER, 0, 3, "mean")])
    assert refused.value.field == "mode"


# --- API -------------------------------------------------------------------------------


def test_the_api_returns_patterns_before_and_after(client: TestClient, hf_tiny: torch.nn.Module) -> None:
    ids = byte_ids(hf_tiny, TEXT)
    body = {"text": TEXT, "layer": 2, "heads": [3, 1], "interventions": [{"layer": LAYER, "position": POSITION, "dim": DIM, "mode": "zero"}, {"layer": LAYER, "position": 0, "dim": "all"}]}
    found = client.post("/api/attention", json=body).json()
    plain = hf_patterns(hf_tiny, ids)[2][[3, 1]]  # (2, T, T)
    zeroed = hf_patterns(hf_tiny, ids, zero=[(POSITION, DIM), (0, slice(None))])[2][[3, 1]]
    assert found["heads"] == [3, 1]
    assert torch.tensor(found["patterns"]) == pytest.approx(plain, abs=6e-5)
    assert torch.tensor(found["patterns_after"]) == pytest.approx(zeroed, abs=6e-5)
    assert found["sink_share"] == pytest.approx(plain[:, :, 0].mean(dim=-1).tolist(), abs=1e-5)
    assert found["sink_share_after"] == pytest.approx(zeroed[:, :, 0].mean(dim=-1).tolist(), abs=1e-5)
    assert all(round(v, 4) == v for v in found["patterns_after"][0][-1])  # rounded like the patterns before

    mean = client.post("/api/attention", json={**body, "heads": None, "mean_heads": True}).json()
    assert torch.tensor(mean["patterns_after"][0]) == pytest.approx(hf_patterns(hf_tiny, ids, zero=[(POSITION, DIM), (0, slice(None))])[2].mean(dim=0), abs=6e-5)


def test_without_interventions_there_is_no_after(client: TestClient) -> None:
    found = client.post("/api/attention", json={"text": TEXT, "layer": 2}).json()
    assert found["patterns_after"] is None and found["sink_share_after"] is None


def test_a_mean_replace_is_served_with_the_reference_means(client: TestClient) -> None:
    body = {"text": TEXT, "layer": 2, "mean_heads": True, "interventions": [{"layer": LAYER, "position": 0, "dim": "all", "mode": "mean"}]}
    response = client.post("/api/attention", json=body)
    assert response.status_code == 200, response.text
    after = torch.tensor(response.json()["patterns_after"][0])  # (T, T)
    assert after.sum(dim=-1) == pytest.approx(torch.ones(after.shape[0]), abs=1e-3)


@pytest.mark.parametrize(
    ("intervention", "field"),
    [
        ({"layer": LAYER, "position": 0, "dim": 64}, "interventions[0].dim"),
        ({"layer": LAYER, "position": 999, "dim": 0}, "interventions[0].position"),
        ({"layer": 9, "position": 0, "dim": 0}, "interventions[0].layer"),
        ({"layer": LAYER, "position": 0, "dim": 0, "mode": "scale"}, "interventions[0].value"),
        ({"layer": LAYER, "position": 0, "dim": 0, "mode": "set", "value": 1e300}, "interventions[0].value"),
        ({"layer": LAYER, "position": 0, "dim": 0, "mode": "melt"}, "interventions[0].mode"),
        ({"layer": LAYER, "position": 0}, "interventions[0].dim"),
    ],
)
def test_a_bad_intervention_is_refused_naming_its_field(client: TestClient, intervention: dict, field: str) -> None:
    response = client.post("/api/attention", json={"text": TEXT, "layer": 2, "interventions": [intervention]})
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["field"] == field


def test_the_payload_guard_counts_the_patterns_after(tiny: LoadedModel, tmp_path) -> None:
    with TestClient(create_app(Settings(max_tokens=512, runs_dir=tmp_path), model=tiny)) as client:
        body = {"text": "y" * 250, "layer": 0, "heads": [1]}  # 251 × 251 = 63,001 values: one pattern fits, two do not
        assert len(client.post("/api/attention", json=body).json()["positions"]) == 251
        response = client.post("/api/attention", json={**body, "interventions": [{"layer": 0, "position": 0, "dim": 0}]})
    assert response.status_code == 200
    found = response.json()
    blocks = len(found["positions"])  # pooled: before and after share the blocks
    assert blocks < 251 and 2 * blocks * blocks <= 100_000
    assert torch.tensor(found["patterns"]).shape == torch.tensor(found["patterns_after"]).shape == (1, blocks, blocks)


def test_an_overflowing_intervention_comes_back_as_nulls_not_a_failure(client: TestClient) -> None:
    overflow = [{"layer": 0, "position": 0, "dim": 0, "mode": "set", "value": 3e38}, {"layer": 1, "position": 0, "dim": 0, "mode": "scale", "value": 10}]
    response = client.post("/api/attention", json={"text": TEXT, "layer": 2, "mean_heads": True, "interventions": overflow})
    assert response.status_code == 200, response.text
    found = response.json()
    assert found["sink_share_after"] == [None] and found["patterns_after"][0][0][0] is None
    assert found["sink_share"][0] is not None
