"""The Dash UI without a browser: state helpers, figure builders, the HTTP client, and the
callbacks themselves, called directly against the real API app with the tiny model injected.

Numbers on screen are checked against hand-computed values or an independently built plain
Hugging Face copy of the tiny model, never against the API's own answer.
"""

from __future__ import annotations

import base64
import importlib
import json
import math
import socket
import time
from typing import Iterator

import dash
import httpx
import pytest
import torch
import torch.nn.functional as F
from dash._callback_context import context_value
from dash._utils import AttributeDict
from fastapi.testclient import TestClient

from app.api.main import create_app as create_api
from app.api.settings import Settings
from app.ui import figures, ids, state
from app.ui.app import create_app, health_state, status_view
from app.ui.client import ApiClient, ApiProblem
from outlier_core.load.models import LoadedModel
from outlier_core.select.mask_files import from_json, from_safetensors_bytes
from tests.hf_reference import byte_ids, hf_forward
from tests.ui_helpers import fired_by, page

TEXT = "Tiny models still have residual streams."
# The client sets a timeout per request; Starlette's TestClient, standing in for the network, ignores it.
pytestmark = pytest.mark.filterwarnings("ignore:You should not use the 'timeout' argument with the TestClient")


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ui(tiny: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dash.Dash]:
    """One UI app whose client talks to the real API app in-process (no sockets)."""
    settings = Settings(max_tokens=256, runs_dir=tmp_path_factory.mktemp("runs"))
    with TestClient(create_api(settings, model=tiny)) as http:
        yield create_app("http://testserver", http=http)


def flat(rows) -> list[float]:
    """Nested rows as one list, for pytest.approx (which compares flat sequences only)."""
    return [v for row in rows for v in row]


def perplexity(logits: torch.Tensor, ids: list[int]) -> float:
    return math.exp(F.cross_entropy(logits[:-1].double(), torch.tensor(ids[1:])).item())


# --- state --------------------------------------------------------------------------


def test_massive_entries_are_grouped_per_coordinate_with_their_layer_span() -> None:
    massive = [
        {"layer": 2, "position": 0, "dim": 7, "value": 800.0},
        {"layer": 3, "position": 0, "dim": 7, "value": -900.0},
        {"layer": 4, "position": 0, "dim": 7, "value": 850.0},
        {"layer": 6, "position": 0, "dim": 7, "value": 10.0},
        {"layer": 3, "position": 5, "dim": 2, "value": 120.0},
    ]
    groups = state.massive_groups(massive, ["<s>", "a", "b", "c", "d", "."])
    assert [(g["position"], g["dim"], g["layers"], g["n_layers"], g["peak"], g["peak_layer"], g["token"]) for g in groups] == [
        (0, 7, "2–4, 6", 4, -900.0, 3, "<s>"),
        (5, 2, "3", 1, 120.0, 3, "."),
    ]


@pytest.mark.parametrize(("layers", "text"), [([], ""), ([5], "5"), ([1, 2, 3], "1–3"), ([0, 2, 3, 9], "0, 2–3, 9")])
def test_layer_ranges(layers: list[int], text: str) -> None:
    assert state.layer_ranges(layers) == text


def test_recurring_counts_distinct_layers_not_entries() -> None:
    massive = [  # position 0 carries two dims in layer 1: that is one layer, not two
        {"layer": 1, "position": 0, "dim": 7, "value": 1.0},
        {"layer": 1, "position": 0, "dim": 9, "value": 1.0},
        {"layer": 2, "position": 0, "dim": 7, "value": 1.0},
        {"layer": 2, "position": 3, "dim": 7, "value": 1.0},
    ]
    found = state.recurring(massive, ["<s>", "x", "y", ","])
    assert found["dims"] == [{"dim": 7, "layers": 2}, {"dim": 9, "layers": 1}]
    assert found["tokens"] == [{"position": 0, "token": "<s>", "layers": 2}, {"position": 3, "token": ",", "layers": 1}]


def test_a_new_intervention_replaces_the_old_one_on_its_coordinate_and_stacks_with_others() -> None:
    a = {"layer": 3, "site": "resid_post", "position": 0, "dim": 7}
    b = {**a, "dim": 8}
    stack = state.stack_intervention([], state.intervention_for(a, "zero", 0.5))
    stack = state.stack_intervention(stack, state.intervention_for(b, "scale", 2))
    stack = state.stack_intervention(stack, state.intervention_for(a, "mean", None))
    assert stack == [
        {**b, "mode": "scale", "value": 2.0},
        {**a, "mode": "mean", "value": None},
    ]


def test_a_click_maps_to_its_coordinate_and_the_rest_column_or_a_block_to_nothing() -> None:
    matrix = {"layer": 2, "site": "resid_post", "tokens": ["<s>", "h", "i"], "dims": [4, 9], "values": [[1, -2], [3, 4], [5, 6]],
              "view": "top", "d_model": 16, "block_size": 1, "rest_max_abs": [0.5, 0.5, 0.5], "max_abs": 6}
    fig = figures.activation_heatmap(matrix)
    heat = fig.data[0]
    cell = {"points": [{"x": heat.x[1], "y": heat.y[2], "z": heat.z[2][1]}]}  # what Dash passes: labels, no customdata
    assert state.coordinate_from_click(cell, matrix, 2, "resid_post") == {"layer": 2, "site": "resid_post", "position": 2, "dim": 9, "token": "i", "value": 6}
    rest = {"points": [{"x": heat.x[2], "y": heat.y[0]}]}
    assert state.coordinate_from_click(rest, matrix, 2, "resid_post") is None
    assert state.coordinate_from_click({"points": [{"x": "0–3", "y": heat.y[0]}]}, {**matrix, "block_size": 4}, 2, "resid_post") is None
    assert state.coordinate_from_click(None, matrix, 2, "resid_post") is None


@pytest.mark.parametrize(("value", "text"), [(None, "—"), (float("inf"), "—"), (0.0, "0"), (0.0312, "0.0312"), (3.14159, "3.14"), (18.44, "18.4"),
                                             (24926.2, "24,926"), (1666693.8, "1.67e+06")])
def test_format_value(value: float | None, text: str) -> None:
    assert state.format_value(value) == text


@pytest.mark.parametrize(("value", "text"), [(None, "—"), (18.4449, "18.44"), (263.04, "263"), (262.84, "262.8"), (1666693.8, "1,666,694"), (3.2e12, "3.200e+12")])
def test_format_perplexity(value: float | None, text: str) -> None:
    assert state.format_perplexity(value) == text


def test_perplexity_change() -> None:
    assert state.perplexity_change(18.0, 1_800_000.0) == "×100,000"
    assert state.perplexity_change(18.0, 18.36) == "×1.02"
    assert state.perplexity_change(18.0, None) == ""


# --- figures ------------------------------------------------------------------------


def test_layer_curve_draws_the_top_three_and_the_median_on_a_log_axis() -> None:
    scan = {
        "tokens": ["<s>", "a"],
        "layers": [
            {"layer": 0, "median_abs": 0.5, "max_abs": 9.0, "top": [{"position": 1, "dim": 3, "value": 4.0, "token": "a"}, {"position": 0, "dim": 1, "value": -9.0, "token": "<s>"}, {"position": 0, "dim": 2, "value": 2.0, "token": "<s>"}]},
            {"layer": 1, "median_abs": 0.7, "max_abs": 800.0, "top": [{"position": 0, "dim": 1, "value": 800.0, "token": "<s>"}, {"position": 0, "dim": 5, "value": -30.0, "token": "<s>"}, {"position": 1, "dim": 3, "value": 6.0, "token": "a"}]},
        ],
        "massive": [{"layer": 1, "position": 0, "dim": 1, "value": 800.0}],
        "sink_share": [0.1, 0.9],
    }
    fig = figures.layer_curve(scan)
    assert [list(t.y) for t in fig.data] == [[9.0, 800.0], [4.0, 30.0], [2.0, 6.0], [0.5, 0.7]]
    assert fig.layout.yaxis.type == "log"
    assert [(s.x0, s.x1) for s in fig.layout.shapes] == [(0.5, 1.5)]  # only the layer with a massive entry is shaded


def test_activation_heatmap_colours_by_log_magnitude_and_keeps_the_signed_value() -> None:
    matrix = {"layer": 1, "site": "resid_post", "tokens": ["<s>", "x"], "dims": [3, 7], "values": [[-1000.0, 0.1], [2.0, 0.0]],
              "view": "top", "d_model": 8, "block_size": 1, "rest_max_abs": [0.01, 5.0], "max_abs": 1000.0}
    fig = figures.activation_heatmap(matrix, selected={"layer": 1, "site": "resid_post", "position": 1, "dim": 7})
    heat = fig.data[0]
    assert list(heat.x) == ["3", "7", "rest"]
    assert list(heat.y) == ["0 '<s>'", "1 'x'"]
    assert flat(heat.z) == pytest.approx([3.0, -1.0, -2.0, math.log10(2.0), math.log10(figures.LOG_FLOOR), math.log10(5.0)])
    assert heat.customdata[0][0] == [0, 3, -1000.0]
    marker = fig.layout.shapes[0]
    assert (marker.x0, marker.x1, marker.y0, marker.y1) == (0.5, 1.5, 0.5, 1.5)  # column of dim 7, row of position 1


def test_weight_histogram_marks_bounds_outliers_and_massive_dims() -> None:
    stats = {
        "name": "model.layers.0.post_attention_layernorm.weight", "effective_scale_offset": 0.0,
        "histogram": {"edges": [0.0, 0.5, 1.0, 1.5], "counts": [3, 40, 1]},
        "outliers": {"rule": {"kind": "sigma", "k": 3.0}, "low": 0.2, "high": 1.2, "count": 2, "listed": [{"index": [5], "value": 1.4}, {"index": [9], "value": 0.01}]},
    }
    fig = figures.weight_histogram(stats, marks=[{"dim": 9, "value": 0.01}])
    bars, outliers = fig.data
    assert list(bars.x) == [0.25, 0.75, 1.25] and list(bars.y) == [3, 40, 1]
    assert list(outliers.x) == [1.4, 0.01]
    assert sorted(s.x0 for s in fig.layout.shapes) == [0.01, 0.2, 1.2]
    assert [a.text for a in fig.layout.annotations] == ["dim 9"]


def test_sink_curve_overlays_after_on_before() -> None:
    fig = figures.sink_curve([0.1, 0.8], [0.1, 0.2])
    assert [list(t.y) for t in fig.data] == [[0.1, 0.8], [0.1, 0.2]]
    assert [t.name for t in fig.data] == ["before", "after"]


def test_norm_overview_has_one_panel_per_norm_with_layers_as_rows() -> None:
    entries = [
        {"layer": layer, "norm": norm, "parameter": f"l{layer}.{norm}", "dim": dim, "value": value, "rank_abs": 0, "rank_signed": 0, "size": 4}
        for layer in (0, 1) for norm, value in (("input_layernorm", 0.5), ("post_attention_layernorm", 0.001)) for dim in (2, 3)
    ]
    fig = figures.norm_overview(entries, [2, 3])
    assert len(fig.data) == 2
    assert list(fig.data[1].y) == [0, 1]
    assert flat(fig.data[1].z) == pytest.approx([-3.0] * 4)


# --- client ---------------------------------------------------------------------------


def mock_client(handler) -> ApiClient:
    http = httpx.Client(base_url="http://api.test", transport=httpx.MockTransport(handler))
    return ApiClient("http://api.test", http=http)


@pytest.mark.parametrize(
    ("status", "body", "kind", "field", "says"),
    [
        (503, {"detail": "the model smollm2-135m is loading; retry shortly", "field": None}, "loading", None, "is loading"),
        (422, {"detail": "layer: 40 is out of range", "field": "layer"}, "input", "layer", "layer: 40 is out of range"),
        (401, {"detail": "X-API-Key: missing or wrong API key", "field": "X-API-Key"}, "auth", "X-API-Key", "OUTLIER_LAB_API_KEY"),
        (500, "Internal Server Error", "server", None, "HTTP 500"),
        (404, {"detail": "Not Found", "field": None}, "missing", None, "no /api/scan route"),
    ],
)
def test_http_errors_become_messages_naming_the_cause(status: int, body, kind: str, field: str | None, says: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body) if isinstance(body, dict) else httpx.Response(status, text=body)

    with pytest.raises(ApiProblem) as caught:
        mock_client(handler).scan("hi", True)
    assert (caught.value.kind, caught.value.status, caught.value.field) == (kind, status, field)
    assert says in caught.value.message


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_api_that_is_not_running_is_reported_as_unreachable_with_how_to_start_it() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ApiProblem) as caught:
        ApiClient(url).scan("hi", True)
    assert caught.value.kind == "unreachable"
    assert url in caught.value.message and "outlier-lab api" in caught.value.message


def test_the_api_key_goes_in_a_header_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("X-API-Key"))
        return httpx.Response(200, json={"status": "ok", "ready": True, "model": "m"})

    monkeypatch.setenv("OUTLIER_LAB_API_KEY", "s3cret")
    mock_client(handler).health()
    monkeypatch.delenv("OUTLIER_LAB_API_KEY")
    mock_client(handler).health()
    assert seen == ["s3cret", None]


def test_the_scan_request_carries_the_chosen_rule(tmp_path) -> None:
    vocab = TestClient(create_api(Settings(runs_dir=tmp_path))).get("/api/vocab").json()  # the API's own, read from the core
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/vocab":
            return httpx.Response(200, json=vocab)
        bodies.append(request.content)
        return httpx.Response(200, json={})

    mock_client(handler).scan("hi", False, rule="relative")
    assert b'"abs_threshold":0.0' in bodies[0].replace(b" ", b"") and b'"median_ratio":300.0' in bodies[0].replace(b" ", b"")


# --- the shell ------------------------------------------------------------------------


def test_a_down_api_is_a_state_with_a_banner_not_an_error() -> None:
    health = health_state(ApiClient(f"http://127.0.0.1:{free_port()}"))
    assert health["reachable"] is False and "Cannot reach" in health["message"]
    text, css, banner = status_view(health)
    assert text == "API unreachable" and "status-down" in css and "Cannot reach" in banner.children


def test_a_loading_model_is_shown_as_loading() -> None:
    text, css, banner = status_view({"reachable": True, "ready": False, "model": None, "loading": "smollm2-135m", "error": None, "message": None})
    assert text == "loading smollm2-135m…" and "status-loading" in css and "smollm2-135m" in banner.children


def test_the_model_page_shows_the_loads_stage_and_a_bar_where_it_counts(ui: dash.Dash) -> None:
    page = importlib.import_module("app.ui.pages.model")
    reading = {"stage": "reading weights", "done": 120, "total": 272, "unit": "tensors", "text": "reading weights: 120 of 272 tensors"}
    shown = page.load_progress({"loading": "smollm2-135m", "progress": reading}, {"name": "smollm2-135m", "since": time.time() - 3})
    text, bar = shown.children
    assert text.children.startswith("Loading smollm2-135m · reading weights: 120 of 272 tensors · 3 s so far")
    assert (bar.value, bar.max) == ("120", "272")
    bridging = {"stage": "building the bridge", "done": None, "total": None, "unit": "", "text": "building the bridge"}
    assert page.load_progress({"loading": "smollm2-135m", "progress": bridging}, None).children == "Loading smollm2-135m · building the bridge…"


def test_the_shell_fetches_the_model_once_it_is_ready(ui: dash.Dash, tiny: LoadedModel) -> None:
    shell = importlib.import_module("app.ui.app")
    health = shell.poll_health(1, None)
    assert health["ready"] is True and health["model"] == "tiny-random"
    text, css, banner, model = shell.show_health(health, None)
    assert banner is None and "status-ready" in css
    assert (model["name"], model["n_layers"], model["d_model"], model["n_heads"]) == ("tiny-random", tiny.n_layers, tiny.d_model, tiny.n_heads)
    assert shell.poll_health(2, health) is dash.no_update  # unchanged health does not re-fire the pages


def test_every_page_is_registered_and_lays_out(ui: dash.Dash) -> None:
    paths = {p["path"] for p in dash.page_registry.values()}
    assert paths == {"/", "/layer", "/attention", "/weights", "/selection", "/finetune", "/experiments", "/model", "/notebook", "/compare"}
    for registered in dash.page_registry.values():
        layout = registered["layout"]
        assert (layout() if callable(layout) else layout) is not None


# --- page callbacks against the real API ---------------------------------------------------


def model_info(ui: dash.Dash) -> dict:
    return importlib.import_module("app.ui.app").show_health(importlib.import_module("app.ui.app").poll_health(1, None), None)[3]


def test_overview_curve_is_the_largest_activation_of_each_layer(ui: dash.Dash, hf_tiny: torch.nn.Module) -> None:
    prompt = {"text": TEXT, "prepend_bos": True}
    curve, sink, massive, recurring, message, scan_store = page("overview").show_scan(prompt, model_info(ui), "resid_post", "paper", None)
    outputs, _, attentions = hf_forward(hf_tiny, byte_ids(hf_tiny, TEXT))
    assert list(curve.data[0].y) == pytest.approx([h.abs().max().item() for h in outputs], rel=1e-4)
    assert list(sink.data[0].y) == pytest.approx([a[0, :, :, 0].mean().item() for a in attentions], abs=1e-4)
    assert scan_store["key"][:2] == [TEXT, True]
    assert "tokens" in message.children


def test_overview_says_why_when_the_scan_is_refused(ui: dash.Dash) -> None:
    prompt = {"text": "x" * 400, "prepend_bos": True}  # past the API's 256-token limit
    curve, _, _, _, message, scan_store = page("overview").show_scan(prompt, model_info(ui), "resid_post", "paper", None)
    assert "Could not scan the prompt" in str(message.children) and "text" in str(message.children)
    assert scan_store is dash.no_update


def test_layer_heatmap_shows_the_layer_and_a_click_selects_its_coordinate(ui: dash.Dash, hf_tiny: torch.nn.Module) -> None:
    layer_page = page("layer")
    prompt = {"text": TEXT, "prepend_bos": True}
    fig, matrix, top_dims, message = layer_page.show_layer(prompt, model_info(ui), 2, "resid_post", "top", None, None)
    assert message is None
    reference = hf_forward(hf_tiny, byte_ids(hf_tiny, TEXT))[0][2]  # (T, D)
    dims = matrix["matrix"]["dims"]
    expected = [[math.log10(max(abs(reference[p, d].item()), figures.LOG_FLOOR)) for d in dims] for p in range(reference.shape[0])]
    assert flat(row[: len(dims)] for row in fig.data[0].z) == pytest.approx(flat(expected), abs=2e-3)  # 4 significant digits on the wire
    click = {"points": [{"x": fig.data[0].x[1], "y": fig.data[0].y[3]}]}
    with fired_by(f"{ids.LX_HEATMAP}.clickData", click):
        selected = layer_page.select_coordinate(click, {"layer": None, "position": None, "dim": None, "site": "resid_post"}, matrix, 2, "resid_post")
    assert (selected["layer"], selected["position"], selected["dim"]) == (2, 3, dims[1])
    assert selected["value"] == pytest.approx(reference[3, dims[1]].item(), rel=1e-3)


def test_zero_raises_perplexity_as_plain_hf_says_and_reset_clears(ui: dash.Dash, hf_tiny: torch.nn.Module) -> None:
    layer_page = page("layer")
    prompt = {"text": TEXT, "prepend_bos": True}
    ids_ = byte_ids(hf_tiny, TEXT)
    outputs, logits, _ = hf_forward(hf_tiny, ids_)
    layer = 1
    position, dim = divmod(int(outputs[layer].abs().argmax()), outputs[layer].shape[1])  # the layer's largest entry
    selected = {"layer": layer, "site": "resid_post", "position": position, "dim": dim, "token": None, "value": None}
    with fired_by(f"{ids.LX_ZERO}.n_clicks", 1):
        stack, effect, message = layer_page.intervene(1, 0, 0, 0, 0, "prompt", selected, 0.5, [], prompt, None)
    assert message is None and stack == [{"layer": layer, "site": "resid_post", "position": position, "dim": dim, "mode": "zero", "value": None}]
    _, zeroed_logits, _ = hf_forward(hf_tiny, ids_, zero=(layer, position, dim))
    result = effect["result"]
    assert result["baseline"]["perplexity"] == pytest.approx(perplexity(logits, ids_), rel=1e-4)
    assert result["intervened"]["perplexity"] == pytest.approx(perplexity(zeroed_logits, ids_), rel=1e-4)

    numbers, curve, sink, predictions, stack_view = layer_page.show_effect(effect, stack, {}, prompt)
    shown = [n.children[1].children for n in numbers.children]
    assert float(shown[1].replace(",", "")) == pytest.approx(perplexity(zeroed_logits, ids_), rel=1e-3)
    assert list(curve.data[1].y)[layer] == pytest.approx(outputs[layer].abs().flatten().topk(2).values[1].item(), rel=1e-3)

    with fired_by(f"{ids.LX_MEAN}.n_clicks", 1):
        stack, effect, _ = layer_page.intervene(1, 1, 0, 0, 0, "prompt", selected, 0.5, stack, prompt, effect)
    assert [item["mode"] for item in stack] == ["mean"]  # replaced, not stacked on the zero
    assert [iv["mode"] for iv in effect["result"]["interventions"]] == ["mean"]

    with fired_by(f"{ids.LX_RESET}.n_clicks", 1):
        assert layer_page.intervene(1, 1, 0, 0, 1, "prompt", selected, 0.5, stack, prompt, effect) == ([], None, None)


def test_a_page_appearing_is_not_a_button_press(ui: dash.Dash) -> None:
    """Dash fires a page's callbacks with every input marked triggered when the page is shown."""
    layer_page = page("layer")
    prompt = {"text": TEXT, "prepend_bos": True}
    inserted = [{"prop_id": f"{i}.n_clicks", "value": 0} for i in (ids.LX_ZERO, ids.LX_MEAN, ids.LX_SCALE, ids.LX_SET, ids.LX_RESET)]
    token = context_value.set(AttributeDict(triggered_inputs=inserted + [{"prop_id": f"{ids.LX_EVAL}.value", "value": "prompt"}]))
    try:
        result = layer_page.intervene(0, 0, 0, 0, 0, "prompt", None, 0.5, [], prompt, None)
    finally:
        context_value.reset(token)
    assert result == (dash.no_update, dash.no_update, dash.no_update)


def test_scale_without_a_number_asks_for_one(ui: dash.Dash) -> None:
    selected = {"layer": 0, "site": "resid_post", "position": 0, "dim": 0, "token": None, "value": None}
    with fired_by(f"{ids.LX_SCALE}.n_clicks", 1):
        stack, effect, message = page("layer").intervene(0, 0, 1, 0, 0, "prompt", selected, None, [], {"text": TEXT, "prepend_bos": True}, None)
    assert stack is dash.no_update and "needs a number" in str(message.children)


def test_attention_pattern_is_the_mean_over_heads(ui: dash.Dash, hf_tiny: torch.nn.Module) -> None:
    fig, message = page("attention").show_pattern({"text": TEXT, "prepend_bos": True}, model_info(ui), 3, "mean")
    _, _, attentions = hf_forward(hf_tiny, byte_ids(hf_tiny, TEXT))
    assert message is None
    assert flat(fig.data[0].z) == pytest.approx(flat(attentions[3][0].mean(dim=0).tolist()), abs=2e-4)


def test_attention_before_after_puts_both_patterns_on_one_colour_scale() -> None:
    fig = figures.attention_before_after(["<s>", "a"], [[1.0, 0.0], [0.75, 0.25]], [[1.0, 0.0], [0.5, 0.5]], "Layer 1")
    before, after = fig.data
    assert [list(map(list, t.z)) for t in fig.data] == [[[1.0, 0.0], [0.75, 0.25]], [[1.0, 0.0], [0.5, 0.5]]]
    assert [(t.zmin, t.zmax) for t in fig.data] == [(0, 1), (0, 1)]
    assert (before.showscale, after.showscale) == (False, True)  # one colour bar serves both
    assert [a.text for a in fig.layout.annotations] == ["before", "after the interventions"]
    assert list(before.y) == ["0 '<s>'", "1 'a'"]


def test_stacked_interventions_show_the_pattern_after_beside_the_pattern_before(ui: dash.Dash, hf_tiny: torch.nn.Module) -> None:
    ids_ = byte_ids(hf_tiny, TEXT)
    outputs, _, attentions = hf_forward(hf_tiny, ids_)
    layer = 1
    position, dim = divmod(int(outputs[layer].abs().argmax()), outputs[layer].shape[1])  # the layer's largest entry
    stack = [state.intervention_for({"layer": layer, "site": "resid_post", "position": position, "dim": dim}, "zero", None)]
    fig, caption = page("attention").show_pattern({"text": TEXT, "prepend_bos": True}, model_info(ui), 2, "mean", stack)
    _, _, zeroed = hf_forward(hf_tiny, ids_, zero=(layer, position, dim))
    before, after = attentions[2][0].mean(dim=0), zeroed[2][0].mean(dim=0)  # (T, T)
    assert (before - after).abs().max() > 1e-3  # the zero visibly moves the pattern
    assert flat(fig.data[0].z) == pytest.approx(flat(before.tolist()), abs=2e-4)
    assert flat(fig.data[1].z) == pytest.approx(flat(after.tolist()), abs=2e-4)
    assert f"{after[:, 0].mean().item():.0%} of attention on position 0" in fig.layout.title.text
    assert state.describe_intervention(stack[0]) in str(caption)


def test_a_stack_that_does_not_fit_the_prompt_leaves_the_pattern_before_and_says_why(ui: dash.Dash, hf_tiny: torch.nn.Module) -> None:
    stack = [state.intervention_for({"layer": 1, "site": "resid_post", "position": 999, "dim": 0}, "zero", None)]
    fig, message = page("attention").show_pattern({"text": TEXT, "prepend_bos": True}, model_info(ui), 2, "mean", stack)
    _, _, attentions = hf_forward(hf_tiny, byte_ids(hf_tiny, TEXT))
    assert len(fig.data) == 1
    assert flat(fig.data[0].z) == pytest.approx(flat(attentions[2][0].mean(dim=0).tolist()), abs=2e-4)
    assert "interventions[0].position" in str(message) and "past the end" in str(message)
    assert page("attention").show_pattern({"text": TEXT, "prepend_bos": True}, model_info(ui), 2, "mean", [])[1] is None


def test_pages_wait_for_the_model_instead_of_calling_the_api(ui: dash.Dash) -> None:
    prompt = {"text": TEXT, "prepend_bos": True}
    curve = page("overview").show_scan(prompt, None, "resid_post", "paper", None)[0]
    heatmap = page("layer").show_layer(prompt, None, 0, "resid_post", "top", None, None)[0]
    for fig in (curve, heatmap):
        assert "Waiting for the API" in fig.layout.annotations[0].text


# --- selection and fine-tune callbacks ---------------------------------------------------------------


def test_a_dim_added_from_the_layer_view_brings_its_norm_entry_and_projections(ui: dash.Dash, tiny: LoadedModel) -> None:
    selected = {"layer": 1, "site": "resid_post", "position": 0, "dim": 5, "token": None, "value": None}
    with fired_by(f"{ids.LX_ADD_MASK}.n_clicks", 1):
        mask, message = page("layer").add_dim_to_mask(1, selected, None)
    assert "Added" in str(message.children)
    counts = mask["counts"]
    d_mlp = tiny.d_mlp
    assert counts["model.layers.1.post_attention_layernorm.weight"] == 1  # the entry that scales dim 5
    assert counts["model.layers.1.mlp.down_proj.weight"] == d_mlp  # row 5 writes dim 5: one value per neuron
    assert counts["model.layers.1.mlp.up_proj.weight"] == d_mlp  # column 5 reads dim 5
    with fired_by(f"{ids.LX_ADD_MASK}.n_clicks", 2):
        again, _ = page("layer").add_dim_to_mask(2, selected, mask)
    assert again["id"] == mask["id"] and again["count"] == mask["count"]  # the same coordinates, counted once


def test_norm_outliers_listed_on_the_weights_view_go_into_the_mask(ui: dash.Dash, tiny: LoadedModel) -> None:
    name = "model.layers.2.input_layernorm.weight"
    weight = dict(tiny.hf_parameters())[name].detach().float()
    outliers = torch.nonzero(((weight - weight.mean()).abs() > 2.0 * weight.std(unbiased=False))).flatten().tolist()  # by hand
    assert outliers, "the tiny model's norm needs an outlier at 2σ for this test"
    listed = [{"parameter": name, "dim": d} for d in outliers]
    with fired_by(f"{ids.WT_ADD_MASK}.n_clicks", 1):
        mask, message = page("weights").add_weights_to_mask(1, [], None, None, listed, None, "sigma", 2.0, None)
    assert mask["counts"] == {name: len(outliers)}
    assert mask["parts"][0]["source"] == "click: weights view, sigma k=2"
    with fired_by(f"{ids.WT_MATRIX_HIST}.clickData", {"points": [{"x": 0.3, "customdata": [3, 7]}]}):
        mask, _ = page("weights").add_weights_to_mask(1, [], None, {"points": [{"customdata": [3, 7]}]}, listed, "model.layers.2.mlp.down_proj.weight", "sigma", 2.0, mask)
    assert mask["counts"]["model.layers.2.mlp.down_proj.weight"] == 1
    with fired_by(f"{ids.WT_MATRIX_HIST}.clickData", {"points": [{"x": 0.3, "y": 12}]}):  # a bar of the histogram: nothing to add
        assert page("weights").add_weights_to_mask(1, [], None, None, listed, "model.layers.2.mlp.down_proj.weight", "sigma", 2.0, mask) == (dash.no_update, dash.no_update)


def test_suggest_then_export_both_formats_loads_back_the_same_mask(ui: dash.Dash, tiny: LoadedModel) -> None:
    selection = page("selection")
    prompt = {"text": TEXT, "prepend_bos": True}
    with fired_by(f"{ids.SL_SUGGEST}.n_clicks", 1):
        mask, message = selection.change_mask(1, 0, None, 0, None, "rules", 64, 0, "prompt", ["norm_outliers", "super_weights"], None, prompt)
    assert mask["name"] == "rules" and 0 < mask["count"] <= 64
    assert "budget of 64" in str(message.children)
    summary, parts_table = selection.show_mask(mask, True)
    assert f"{mask['count']:,} parameter" in summary.children
    loaded = []
    for button in (ids.SL_EXPORT_JSON, ids.SL_EXPORT_ST):
        with fired_by(f"{button}.n_clicks", 1):
            download, problem = selection.export(1, 1, mask)
        assert problem is None and download["filename"] == ("rules.json" if button == ids.SL_EXPORT_JSON else "rules.safetensors")
        data = base64.b64decode(download["content"])
        loaded.append(from_json(json.loads(data)) if button == ids.SL_EXPORT_JSON else from_safetensors_bytes(data))
    for exported in loaded:
        exported.validate(tiny)
        assert exported.count == mask["count"]
    assert loaded[0].same_as(loaded[1])


def test_a_bad_budget_is_refused_before_calling_the_api(ui: dash.Dash) -> None:
    with fired_by(f"{ids.SL_SUGGEST}.n_clicks", 1):
        mask, message = page("selection").change_mask(1, 0, None, 0, None, "rules", None, 0, "prompt", ["norm_outliers"], None, {"text": TEXT, "prepend_bos": True})
    assert mask is dash.no_update and "budget" in str(message.children)


def test_a_fine_tune_job_is_followed_to_its_results(ui: dash.Dash) -> None:
    finetune = page("finetune")
    with fired_by(f"{ids.SL_SUGGEST}.n_clicks", 1):
        mask, _ = page("selection").change_mask(1, 0, None, 0, None, "ft", 32, 0, "prompt", ["norm_outliers"], None, {"text": TEXT, "prepend_bos": True})
    with fired_by(f"{ids.FT_START}.n_clicks", 1):
        job, message = finetune.start_or_cancel(1, 0, mask, ["random"], 3, 1e-3, "prose", None, "off", None)
    assert f"Started job {job['id']}" in str(message.children)
    deadline, live = time.monotonic() + 120, None
    while True:
        progress, status, poll_disabled, live, results, loss, outliers = finetune.follow_job(1, job, {"name": "tiny-random"}, live)
        state = progress[1].children.split(" · ")[0]
        if poll_disabled:
            break
        assert state in ("queued", "running") and time.monotonic() < deadline
        time.sleep(0.2)
    assert state == "done", str(progress)
    rows = results.children[2].children[1].children  # the results table body
    assert [row.children[0].children for row in rows] == ["ft", "random"]
    peaks = [row.children[5].children for row in rows]
    assert all(float(p.replace(",", "")) >= 0 for p in peaks)  # plain numbers: "off" reached the API (by default both say "(recomputed)")
    assert [trace.name for trace in loss.data] == ["ft", "random"] and all(len(trace.y) == 3 for trace in loss.data)
    assert outliers.data[0].name == "base model"


def test_the_shard_choice_reaches_the_api_which_refuses_a_norm_mask(ui: dash.Dash) -> None:
    with fired_by(f"{ids.SL_SUGGEST}.n_clicks", 1):
        mask, _ = page("selection").change_mask(1, 0, None, 0, None, "sh", 32, 0, "prompt", ["norm_outliers"], None, {"text": TEXT, "prepend_bos": True})
    with fired_by(f"{ids.FT_START}.n_clicks", 1):
        job, message = page("finetune").start_or_cancel(1, 0, mask, [], 3, 1e-3, "prose", None, "auto", None, None, None, None, ["fsdp"])
    assert job is dash.no_update and "layernorm.weight is not a Linear weight" in str(message.children)  # the norm rule's entries


def test_a_fine_tune_without_a_mask_says_so(ui: dash.Dash) -> None:
    with fired_by(f"{ids.FT_START}.n_clicks", 1):
        job, message = page("finetune").start_or_cancel(1, 0, None, ["random"], 3, 1e-3, "prose", None, "auto", None)
    assert job is dash.no_update and "Selection page" in str(message.children)
