"""A run's deltas in the Dash UI without a browser: the Apply buttons, the bar every page
shows, and the pages redrawing on base + deltas; callbacks called directly against the real
API app with the tiny model injected and a real comparison on disk.

The numbers a page shows are checked against a plain Hugging Face copy of the tiny model
whose weights were edited by hand from the run's safetensors file.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Iterator

import dash
import pytest
import torch
from fastapi.testclient import TestClient

from app.api.main import create_app as create_api
from app.api.settings import Settings
from app.ui import ids, state
from app.ui.app import create_app
from outlier_core.load.models import LoadedModel, load_model, tiny_random_hf
from outlier_core.select.masks import SelectionMask
from outlier_core.tune import train_data
from outlier_core.tune.comparison import compare
from tests.hf_reference import byte_ids, hf_forward, sparse_edited
from tests.ui_helpers import fired_by, page

TEXT = "Tiny models still have residual streams."
RUN_ID = "20990101-000000-abcdef"
DOWN = "model.layers.1.mlp.down_proj.weight"
pytestmark = pytest.mark.filterwarnings("ignore:You should not use the 'timeout' argument with the TestClient")


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    trainer = load_model("tiny-random", device="cpu")
    mask = SelectionMask.empty(trainer, "clicks").add(trainer, DOWN, "rows", [3, 7], "click")
    config = train_data.TrainConfig(steps=3, lr=0.05, batch_size=2, seq_len=16)
    data = train_data.make_data(trainer, train_data.load_corpus("code"), config)
    root = tmp_path_factory.mktemp("runs")
    compare(trainer, mask, ("lora",), data, config, root / RUN_ID)
    return root


@pytest.fixture(scope="module")
def ui(tiny: LoadedModel, runs_dir: Path) -> Iterator[dash.Dash]:
    with TestClient(create_api(Settings(max_tokens=256, runs_dir=runs_dir), model=tiny)) as http:
        yield create_app("http://testserver", http=http)


def shell():
    return importlib.import_module("app.ui.app")


def button_prop(component_id: dict) -> str:
    """The prop id Dash sends for a click on a pattern-matched button."""
    return json.dumps(component_id, separators=(",", ":"), sort_keys=True) + ".n_clicks"


def buttons(component) -> list[dict]:
    """Ids of every Apply button in a component tree."""
    found = []
    children = getattr(component, "children", None)
    if isinstance(getattr(component, "id", None), dict) and component.id.get("type") == ids.FT_APPLY:
        found.append(component.id)
    for child in children if isinstance(children, list) else [children] if children is not None else []:
        found += buttons(child)
    return found


def layer_maxima(hf: torch.nn.Module) -> list[float]:
    hf.byte_tokenizer = tiny_random_hf()[1]
    hf.set_attn_implementation("eager")
    outputs, _, _ = hf_forward(hf.eval(), byte_ids(hf, TEXT))
    return [h.abs().max().item() for h in outputs]


def test_the_bar_and_the_cache_keys_say_which_deltas_are_served() -> None:
    on = {"run": RUN_ID, "method": "mask", "enabled": True, "merged": False}
    assert state.deltas_line(on) == f"serving base + {RUN_ID}/mask deltas — on"
    assert state.deltas_line({**on, "enabled": False}) == f"serving base + {RUN_ID}/mask deltas — off"
    assert "merged" in state.deltas_line({**on, "merged": True})
    base = {"name": "tiny-random", "deltas": None}
    keys = {state.model_key(base), state.model_key({**base, "deltas": on}), state.model_key({**base, "deltas": {**on, "merged": True}})}
    assert len(keys) == 3
    assert state.model_key({**base, "deltas": {**on, "enabled": False}}) == state.model_key(base)  # off computes the base exactly


def test_apply_from_the_results_then_switch_off_and_detach_redraw_the_overview(ui: dash.Dash, runs_dir: Path) -> None:
    prompt = {"text": TEXT, "prepend_bos": True}
    health = shell().poll_health(1, None)
    model = shell().show_health(health, None)[3]
    base_curve, _, _, _, _, base_scan = page("overview").show_scan(prompt, model, "resid_post", "paper", None)
    assert shell().show_deltas(health)[0] is True  # nothing applied: the bar is hidden

    result = json.loads((runs_dir / RUN_ID / "comparison.json").read_text())
    offered = buttons(page("finetune").results_table(result))
    assert offered == [{"type": ids.FT_APPLY, "run": RUN_ID, "method": m, "table": "results"} for m in ("mask", "lora")]
    with fired_by(button_prop(offered[0]), 1):
        health, message = page("finetune").apply_run([1, 0], health)
    assert health["deltas"]["run"] == RUN_ID and "base + the deltas of clicks" in str(message.children)
    hidden, text, toggle, controls_hidden = shell().show_deltas(health)
    assert (hidden, text, toggle, controls_hidden) == (False, f"serving base + {RUN_ID}/mask deltas — on", "Switch off", False)

    model = shell().show_health(health, model)[3]  # fetched again: the deltas changed
    assert model["deltas"] == health["deltas"]
    curve = page("overview").show_scan(prompt, model, "resid_post", "paper", base_scan)[0]  # the base scan is not reused
    expected = layer_maxima(sparse_edited(runs_dir / RUN_ID / "mask" / "deltas.safetensors"))
    assert list(curve.data[0].y) == pytest.approx(expected, rel=1e-4)
    assert list(curve.data[0].y) != pytest.approx(list(base_curve.data[0].y), rel=1e-4)

    with fired_by(button_prop(offered[1]), 1):
        unchanged, refusal = page("finetune").apply_run([1, 1], health)
    assert unchanged is dash.no_update and "applied already" in str(refusal.children)

    with fired_by(f"{ids.DELTAS_TOGGLE}.n_clicks", 1):
        health, message = shell().change_deltas(1, 0, None, health)
    assert message is None and shell().show_deltas(health)[1:3] == (f"serving base + {RUN_ID}/mask deltas — off", "Switch on")
    model = shell().show_health(health, model)[3]
    off_curve = page("overview").show_scan(prompt, model, "resid_post", "paper", None)[0]
    assert list(off_curve.data[0].y) == list(base_curve.data[0].y)

    with fired_by(f"{ids.DELTAS_DETACH}.n_clicks", 1):
        health, message = shell().change_deltas(1, 1, None, health)
    assert health["deltas"] is None and shell().show_deltas(health)[0] is True
    assert shell().poll_health(2, health) is dash.no_update  # the API agrees: nothing applied


def test_earlier_runs_offer_every_method_that_saved_deltas(ui: dash.Dash) -> None:
    model = shell().show_health(shell().poll_health(1, None), None)[3]
    listed = buttons(page("finetune").list_runs(model, None))
    assert {(b["run"], b["method"], b["table"]) for b in listed} == {(RUN_ID, "mask", "runs"), (RUN_ID, "lora", "runs")}
