"""The API through the real app (TestClient) with the tiny model injected.

Numbers are checked against an independently built plain Hugging Face copy of the tiny
model; the holding-up machinery (503 while loading, 401, 413, 422 naming the field,
health during a forward pass) against what a client would see.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Iterator

import pytest
import torch
from fastapi.testclient import TestClient

import app.api.service as service_module
from app.api.convert import significant
from app.api.main import create_app
from app.api.routes.activations import MAX_CELLS
from app.api.settings import Settings
from outlier_core.load.models import LoadedModel
from outlier_core.observe.heatmap import columns_for, dim_view
from tests.hf_reference import byte_ids, hf_forward

TEXT = "Tiny models still have residual streams."
MAX_TOKENS = 128


@pytest.fixture(autouse=True)
def _runs_in_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Masks and jobs live under runs_dir: keep every app's in the test's own folder."""
    monkeypatch.setenv("OUTLIER_LAB_RUNS_DIR", str(tmp_path / "runs"))


@pytest.fixture()
def client(tiny: LoadedModel) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(max_tokens=MAX_TOKENS), model=tiny)) as test_client:
        yield test_client


def count_hooks(model: LoadedModel) -> int:
    return sum(len(hp._forward_hooks) for hp in model.bridge.hook_dict.values())


# --- health and model --------------------------------------------------------


def test_health_reports_the_injected_model(client: TestClient) -> None:
    assert client.get("/api/health").json() == {"status": "ok", "ready": True, "model": "tiny-random", "loading": None, "error": None, "deltas": None, "progress": None}


def test_model_describes_the_loaded_model(client: TestClient, hf_tiny: torch.nn.Module) -> None:
    body = client.get("/api/model").json()
    config = hf_tiny.config
    assert body["name"] == "tiny-random"
    assert (body["n_layers"], body["d_model"], body["n_heads"], body["d_mlp"], body["d_vocab"]) == (
        config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.intermediate_size, config.vocab_size,
    )
    assert body["n_params"] == sum(p.numel() for p in hf_tiny.parameters())
    assert body["device"] == "cpu" and body["dtype"] == "float32"
    assert body["max_tokens"] == MAX_TOKENS


def test_models_lists_the_registry(client: TestClient) -> None:
    body = client.get("/api/models").json()
    names = {m["name"]: m["loaded"] for m in body["models"]}
    assert {"smollm2-135m", "tiny-random"} <= set(names)
    assert names["tiny-random"] is True and names["smollm2-135m"] is False
    assert body["current"] == "tiny-random" and body["loading"] is None


def test_health_answers_while_the_model_loads_and_model_routes_say_503(monkeypatch: pytest.MonkeyPatch, tiny: LoadedModel) -> None:
    release = threading.Event()

    def slow_load(name: str, device=None, dtype=None, sources=None, placement=None, progress=None) -> LoadedModel:
        assert release.wait(30)
        return tiny

    monkeypatch.setattr(service_module, "load_model", slow_load)
    with TestClient(create_app(Settings(model="tiny-random"))) as client:
        health = client.get("/api/health").json()
        assert health == {"status": "ok", "ready": False, "model": None, "loading": "tiny-random", "error": None, "deltas": None, "progress": None}
        for method, path, payload in [("post", "/api/scan", {"text": TEXT}), ("get", "/api/model", None)]:
            response = client.request(method, path, json=payload)
            assert response.status_code == 503
            assert "tiny-random is loading" in response.json()["detail"]
            assert response.headers["retry-after"]
        release.set()
        assert wait_ready(client)["model"] == "tiny-random"
        assert client.post("/api/scan", json={"text": TEXT}).status_code == 200


def wait_ready(client: TestClient, seconds: float = 30) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        health = client.get("/api/health").json()
        if health["loading"] is None:
            return health
        time.sleep(0.02)
    raise AssertionError("the model never finished loading")


def test_a_failed_first_load_is_reported_and_model_routes_say_why(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_load(name: str, device=None, dtype=None, sources=None, placement=None, progress=None) -> LoadedModel:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(service_module, "load_model", broken_load)
    with TestClient(create_app(Settings(model="tiny-random"))) as client:
        health = wait_ready(client)
        assert health["ready"] is False and health["model"] is None
        assert "disk on fire" in health["error"]
        response = client.post("/api/scan", json={"text": TEXT})
        assert response.status_code == 503 and "disk on fire" in response.json()["detail"]


def test_a_failed_swap_keeps_the_old_model_serving(monkeypatch: pytest.MonkeyPatch, client: TestClient) -> None:
    release = threading.Event()

    def broken_load(name: str, device=None, dtype=None, sources=None, placement=None, progress=None) -> LoadedModel:
        assert release.wait(30)
        raise OSError("not in the cache")

    before = client.post("/api/scan", json={"text": TEXT}).json()
    monkeypatch.setattr(service_module, "load_model", broken_load)
    response = client.post("/api/model", json={"name": "tiny-random", "device": "cpu"})
    assert response.status_code == 202 and response.json() == {"status": "loading", "name": "tiny-random"}
    assert client.post("/api/scan", json={"text": TEXT}).status_code == 503
    second = client.post("/api/model", json={"name": "tiny-random"})
    assert second.status_code == 409 and second.json()["field"] == "name"
    release.set()
    health = wait_ready(client)
    assert health["ready"] is True and health["model"] == "tiny-random" and "not in the cache" in health["error"]
    assert client.post("/api/scan", json={"text": TEXT}).json() == before


def test_a_swap_serves_the_new_model_once_loaded(monkeypatch: pytest.MonkeyPatch, client: TestClient, tiny: LoadedModel) -> None:
    other = LoadedModel(**{**tiny.__dict__, "name": "tiny-random-copy"})
    monkeypatch.setattr(service_module, "load_model", lambda name, device=None, dtype=None, sources=None, placement=None, progress=None: other)
    assert client.post("/api/model", json={"name": "tiny-random"}).status_code == 202
    assert wait_ready(client)["model"] == "tiny-random-copy"
    assert client.get("/api/model").json()["name"] == "tiny-random-copy"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "no-such-model"}, "name"),
        ({"name": ""}, "name"),
        ({"name": "tiny-random", "dtype": "float8"}, "dtype"),
        ({"name": "tiny-random", "device": "tpu"}, "device"),
        ({"name": "tiny-random", "device": "cuda:7"}, "device"),
        ({"name": "tiny-random", "colour": "blue"}, "colour"),
    ],
)
def test_swap_requests_with_bad_input_are_refused_up_front(client: TestClient, payload: dict, field: str) -> None:
    if payload.get("device") == "cuda:7" and torch.cuda.is_available():
        payload = {**payload, "device": "cuda:x"}
    response = client.post("/api/model", json=payload)
    assert response.status_code == 422
    assert response.json()["field"] == field
    assert client.get("/api/health").json()["loading"] is None


def test_health_and_model_info_never_wait_behind_a_forward_pass(tiny: LoadedModel) -> None:
    app = create_app(Settings(max_tokens=MAX_TOKENS), model=tiny)
    service = app.state.service
    with TestClient(app) as client:
        results: dict[str, int] = {}
        with service.lock:  # as if a long forward pass were running
            waiting = threading.Thread(target=lambda: results.update(scan=client.post("/api/scan", json={"text": TEXT}).status_code))
            waiting.start()
            for path in ("/api/health", "/api/model", "/api/models"):
                started = time.monotonic()
                assert client.get(path).status_code == 200
                assert time.monotonic() - started < 1.0
            waiting.join(0.3)
            assert waiting.is_alive(), "the scan should be queued behind the held lock"
        waiting.join(30)
        assert results == {"scan": 200}


# --- numbers against plain Hugging Face ---------------------------------------


def test_scan_matches_the_plain_hf_model(client: TestClient, hf_tiny: torch.nn.Module) -> None:
    body = client.post("/api/scan", json={"text": TEXT, "top_k": 4, "abs_threshold": 0.0, "median_ratio": 4.0}).json()
    outputs, _, attentions = hf_forward(hf_tiny, byte_ids(hf_tiny, TEXT))
    assert body["tokens"] == ["<bos>", *TEXT]
    assert [layer["layer"] for layer in body["layers"]] == list(range(len(outputs)))
    expected_massive = []
    for layer, (summary, h) in enumerate(zip(body["layers"], outputs)):
        values, index = h.abs().flatten().topk(4)
        d = h.shape[1]
        assert [(t["position"], t["dim"]) for t in summary["top"]] == [(int(i) // d, int(i) % d) for i in index]
        assert [t["value"] for t in summary["top"]] == pytest.approx(h.flatten()[index].tolist(), rel=1e-4)
        assert [t["token"] for t in summary["top"]] == [body["tokens"][int(i) // d] for i in index]
        median = float(h.abs().flatten().median())
        assert summary["median_abs"] == pytest.approx(median, rel=1e-4)
        assert summary["max_abs"] == pytest.approx(float(values[0]), rel=1e-4)
        positions, dims = torch.nonzero(h.abs() > 4.0 * median, as_tuple=True)
        expected_massive += [(layer, int(p), int(q)) for p, q in zip(positions, dims)]
    assert sorted((m["layer"], m["position"], m["dim"]) for m in body["massive"]) == sorted(expected_massive)
    assert expected_massive, "the thresholds were chosen so that some entries qualify"
    assert body["sink_share"] == pytest.approx([float(a[0, :, :, 0].mean()) for a in attentions], rel=1e-4)
    assert torch.tensor(body["head_sink_share"]) == pytest.approx(torch.stack([a[0, :, :, 0].mean(dim=-1) for a in attentions]), rel=1e-4)


def test_scan_uses_the_paper_rule_by_default(client: TestClient) -> None:
    assert client.post("/api/scan", json={"text": TEXT}).json()["massive"] == []  # random weights: nothing above 100


def test_scan_without_bos_starts_at_the_first_character(client: TestClient, hf_tiny: torch.nn.Module) -> None:
    body = client.post("/api/scan", json={"text": TEXT, "prepend_bos": False, "top_k": 1}).json()
    outputs, _, _ = hf_forward(hf_tiny, byte_ids(hf_tiny, TEXT, bos=False))
    assert body["tokens"] == list(TEXT)
    assert [layer["max_abs"] for layer in body["layers"]] == pytest.approx([float(h.abs().max()) for h in outputs], rel=1e-4)


def test_activations_top_view_matches_hf(client: TestClient, hf_tiny: torch.nn.Module) -> None:
    body = client.post("/api/activations", json={"text": TEXT, "layer": 2, "max_dims": 10}).json()
    h = hf_forward(hf_tiny, byte_ids(hf_tiny, TEXT))[0][2]  # (T, D)
    peak = h.abs().amax(dim=0)
    expected_dims = sorted(peak.topk(10).indices.tolist())
    assert body["dims"] == expected_dims and body["view"] == "top" and body["d_model"] == h.shape[1]
    assert torch.tensor(body["values"]) == pytest.approx(h[:, expected_dims], rel=1e-3, abs=1e-9)
    others = [d for d in range(h.shape[1]) if d not in expected_dims]
    assert body["rest_max_abs"] == pytest.approx(h[:, others].abs().amax(dim=1).tolist(), rel=1e-3)
    assert body["max_abs"] == pytest.approx(float(h.abs().max()), rel=1e-5)


def test_activations_block_view_keeps_the_signed_extreme_of_each_block(client: TestClient, hf_tiny: torch.nn.Module) -> None:
    body = client.post("/api/activations", json={"text": TEXT, "layer": 1, "view": "block", "max_dims": 5}).json()
    h = hf_forward(hf_tiny, byte_ids(hf_tiny, TEXT))[0][1]  # (T, 64)
    size = 13  # ceil(64 / 5)
    assert body["block_size"] == size and body["dims"] == [0, 13, 26, 39, 52]
    for position, row in enumerate(body["values"]):
        for column, start in enumerate(body["dims"]):
            block = h[position, start : start + size]
            assert row[column] == pytest.approx(float(block[block.abs().argmax()]), rel=1e-3)


def test_activations_range_view_zooms_without_pooling(client: TestClient, hf_tiny: torch.nn.Module) -> None:
    body = client.post("/api/activations", json={"text": TEXT, "layer": 0, "site": "hook_resid_post", "view": "range", "dim_start": 10, "dim_stop": 20}).json()
    h = hf_forward(hf_tiny, byte_ids(hf_tiny, TEXT))[0][0]
    assert body["dims"] == list(range(10, 20)) and body["site"] == "resid_post"
    assert torch.tensor(body["values"]) == pytest.approx(h[:, 10:20], rel=1e-3, abs=1e-9)


def test_a_heatmap_payload_stays_under_one_megabyte_at_any_size() -> None:
    torch.manual_seed(0)
    for n_positions, d_model in [(1024, 8192), (8, 16384), (4096, 4096)]:
        values = torch.randn(n_positions, d_model) * torch.logspace(-3, 4, d_model)  # magnitudes from 0.001 to 10^4
        for view in ("top", "block", "range"):
            shown = dim_view(values, view, columns_for(n_positions, 1024, MAX_CELLS))
            payload = json.dumps({"values": significant(shown.values), "dims": list(shown.dims), "rest_max_abs": significant(shown.rest_max_abs)})
            assert len(payload) < 1_000_000, (n_positions, d_model, view, len(payload))


def test_attention_matches_hf(client: TestClient, hf_tiny: torch.nn.Module) -> None:
    body = client.post("/api/attention", json={"text": TEXT, "layer": 3}).json()
    pattern = hf_forward(hf_tiny, byte_ids(hf_tiny, TEXT))[2][3][0]  # (H, T, T)
    assert body["heads"] == list(range(pattern.shape[0]))
    assert torch.tensor(body["patterns"]) == pytest.approx(pattern, abs=6e-5)
    assert body["sink_share"] == pytest.approx(pattern[:, :, 0].mean(dim=-1).tolist(), abs=1e-5)
    chosen = client.post("/api/attention", json={"text": TEXT, "layer": 3, "heads": [2, 0]}).json()
    assert chosen["heads"] == [2, 0]
    assert torch.tensor(chosen["patterns"]) == pytest.approx(pattern[[2, 0]], abs=6e-5)
    mean = client.post("/api/attention", json={"text": TEXT, "layer": 3, "heads": [1, 3], "mean_heads": True}).json()
    assert mean["heads"] == []
    assert torch.tensor(mean["patterns"][0]) == pytest.approx(pattern[[1, 3]].mean(dim=0), abs=6e-5)


# --- bad input ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "raw", "field"),
    [
        ("/api/scan", '{"text": NaN}', "text"),
        ("/api/scan", '{"text": "hi", "abs_threshold": NaN}', "abs_threshold"),
        ("/api/scan", '{"text": "hi", "median_ratio": Infinity}', "median_ratio"),
        ("/api/scan", '{"text": "hi", "median_ratio": -Infinity}', "median_ratio"),
        ("/api/scan", '{"text": "hi", "abs_threshold": 1e999}', "abs_threshold"),
        ("/api/scan", '{"text": "hi", "top_k": NaN}', "top_k"),
        ("/api/activations", '{"text": "hi", "layer": Infinity}', "layer"),
        ("/api/attention", '{"text": "hi", "layer": 0, "heads": [NaN]}', "heads[0]"),
    ],
)
def test_non_finite_values_get_a_422_that_names_the_field_and_echoes_nothing(client: TestClient, path: str, raw: str, field: str) -> None:
    response = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    body = response.json()
    assert body["field"] == field and body["detail"].startswith(f"{field}:")
    for echo in ("NaN", "nan", "Infinity", "inf", "1e999"):
        assert echo not in response.text.replace("finite", "")


@pytest.mark.parametrize(
    ("path", "payload", "field"),
    [
        ("/api/scan", {}, "text"),
        ("/api/scan", {"text": ""}, "text"),
        ("/api/scan", {"text": 42}, "text"),
        ("/api/scan", {"text": "x" * (MAX_TOKENS + 5)}, "text"),
        ("/api/scan", {"text": "hi", "site": "resid_sideways"}, "site"),
        ("/api/scan", {"text": "hi", "top_k": 0}, "top_k"),
        ("/api/scan", {"text": "hi", "top_k": "three"}, "top_k"),
        ("/api/scan", {"text": "hi", "prepend_bos": "perhaps"}, "prepend_bos"),
        ("/api/scan", {"text": "hi", "abs_threshold": -1}, "abs_threshold"),
        ("/api/scan", {"text": "hi", "topk": 3}, "topk"),
        ("/api/activations", {"text": "hi", "layer": 4}, "layer"),
        ("/api/activations", {"text": "hi", "layer": -1}, "layer"),
        ("/api/activations", {"text": "hi"}, "layer"),
        ("/api/activations", {"text": "hi", "layer": 0, "view": "mean"}, "view"),
        ("/api/activations", {"text": "hi", "layer": 0, "view": "range", "dim_start": 64}, "dim_start"),
        ("/api/activations", {"text": "hi", "layer": 0, "view": "range", "dim_start": 5, "dim_stop": 5}, "dim_stop"),
        ("/api/activations", {"text": "hi", "layer": 0, "max_dims": 0}, "max_dims"),
        ("/api/activations", {"text": "x" * (MAX_TOKENS + 5), "layer": 0}, "text"),
        ("/api/attention", {"text": "hi", "layer": 0, "heads": [4]}, "heads"),
        ("/api/attention", {"text": "hi", "layer": 0, "heads": []}, "heads"),
        ("/api/attention", {"text": "hi", "layer": 9}, "layer"),
    ],
)
def test_bad_input_gets_a_422_naming_the_field(client: TestClient, path: str, payload: dict, field: str) -> None:
    response = client.post(path, json=payload)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


def test_an_attention_map_too_large_for_one_payload_is_pooled(tiny: LoadedModel) -> None:
    """4 heads × 301 × 301 would pass 100,000 values: positions come back pooled into blocks, under 1 MB."""
    with TestClient(create_app(Settings(max_tokens=512), model=tiny)) as client:
        response = client.post("/api/attention", json={"text": "y" * 300, "layer": 0})
        one_head = client.post("/api/attention", json={"text": "y" * 300, "layer": 0, "heads": [1]}).json()
    assert response.status_code == 200 and len(response.content) < 2**20
    body = response.json()
    assert len(body["tokens"]) == 301 and len(one_head["positions"]) == 301  # one head fits whole
    blocks = len(body["positions"])
    assert body["positions"][:2] == [0, 1] and 4 * blocks * blocks <= 100_000
    assert torch.tensor(body["patterns"]).shape == (4, blocks, blocks)
    assert torch.tensor(body["patterns"]).sum(dim=-1) == pytest.approx(torch.ones(4, blocks), abs=1e-3)  # rows still sum to 1
    assert body["sink_share"][1] == pytest.approx(one_head["sink_share"][0], abs=1e-6)  # from the unpooled patterns


def test_unparsable_json_names_the_body(client: TestClient) -> None:
    for raw in ('{"text": "hi",', "[" * 100_000):
        response = client.post("/api/scan", content=raw, headers={"content-type": "application/json"})
        assert 400 <= response.status_code < 500
        assert response.json()["field"] == "body"


def test_an_oversized_body_gets_a_413(tiny: LoadedModel) -> None:
    with TestClient(create_app(Settings(max_body_bytes=2048), model=tiny)) as client:
        response = client.post("/api/scan", json={"text": "z" * 4096})
        assert response.status_code == 413 and response.json()["field"] == "body"

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must count the bytes
            yield b'{"text": "'
            for _ in range(8):
                yield b"z" * 512
            yield b'"}'

        chunked = client.post("/api/scan", content=chunks(), headers={"content-type": "application/json"})
        assert chunked.status_code == 413
        assert client.post("/api/scan", json={"text": "z" * 100}).status_code == 200


def test_errors_after_the_forward_pass_leave_no_hooks_and_release_the_model(client: TestClient, tiny: LoadedModel) -> None:
    hooks = count_hooks(tiny)
    before = client.post("/api/scan", json={"text": TEXT}).json()
    for payload in [
        {"text": TEXT, "layer": 1, "view": "range", "dim_start": 999},  # refused after the forward pass
        {"text": TEXT, "layer": 1, "site": "nowhere"},
    ]:
        assert client.post("/api/activations", json=payload).status_code == 422
    assert count_hooks(tiny) == hooks
    assert client.post("/api/scan", json={"text": TEXT}).json() == before


# --- API key -----------------------------------------------------------------


def test_the_api_key_guards_everything_but_health(tiny: LoadedModel) -> None:
    with TestClient(create_app(Settings(api_key="s3cret"), model=tiny)) as client:
        assert client.get("/api/health").status_code == 200
        for method, path, payload in [("get", "/api/model", None), ("get", "/api/models", None), ("post", "/api/scan", {"text": TEXT}), ("post", "/api/model", {"name": "tiny-random"})]:
            assert client.request(method, path, json=payload).status_code == 401
            wrong = client.request(method, path, json=payload, headers={"X-API-Key": "guess"})
            assert wrong.status_code == 401 and wrong.json()["field"] == "X-API-Key"
        assert client.post("/api/scan", json={"text": TEXT}, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert client.get("/api/health").json()["loading"] is None  # the refused swap never started


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tiny: LoadedModel) -> None:
    monkeypatch.setenv("OUTLIER_LAB_API_KEY", "from-env")
    monkeypatch.setenv("OUTLIER_LAB_MAX_TOKENS", "16")
    with TestClient(create_app(model=tiny)) as client:
        headers = {"X-API-Key": "from-env"}
        assert client.get("/api/model", headers=headers).json()["max_tokens"] == 16
        response = client.post("/api/scan", json={"text": "x" * 20}, headers=headers)
        assert response.status_code == 422 and "limit is 16" in response.json()["detail"]
    settings = Settings()
    assert settings.host == "127.0.0.1"


def test_openapi_documents_every_route(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/health", "/api/model", "/api/models", "/api/scan", "/api/activations", "/api/attention"):
        assert path in paths


def test_the_api_command_refuses_bad_settings_before_serving(capsys: pytest.CaptureFixture[str]) -> None:
    from app.cli.main import main

    assert main(["api", "--port", "70000", "--model", "tiny-random"]) == 2
    assert "--port" in capsys.readouterr().err


def test_an_unknown_key_is_named_but_never_echoed_at_length(client: TestClient) -> None:
    response = client.post("/api/scan", json={"text": "hi", "k" * 100_000: 1})
    assert response.status_code == 422
    assert len(response.content) < 2_000
