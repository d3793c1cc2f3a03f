"""The workbench's state rules without a browser: what fits a new prompt, what a URL carries, how
a job's progress and end are worded. Callbacks are called directly against the real API app with
the tiny model injected."""

from __future__ import annotations

import importlib
from typing import Iterator

import dash
import pytest
from dash._get_app import app_context
from fastapi.testclient import TestClient

from app.api.main import create_app as create_api
from app.api.settings import Settings
from app.ui import state, url_state
from app.ui.app import create_app
from app.ui.client import ApiProblem
from outlier_core.load.models import LoadedModel
from tests.ui_helpers import page

pytestmark = pytest.mark.filterwarnings("ignore:You should not use the 'timeout' argument with the TestClient")

ZERO_AT_30 = {"layer": 1, "site": "resid_post", "position": 30, "dim": 5, "mode": "zero", "value": None}
SCALE_AT_2 = {"layer": 3, "site": "attn_out", "position": 2, "dim": 7, "mode": "scale", "value": 0.25}


@pytest.fixture(scope="module")
def ui(tiny: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dash.Dash]:
    with TestClient(create_api(Settings(max_tokens=256, runs_dir=tmp_path_factory.mktemp("runs")), model=tiny)) as http:
        yield create_app("http://testserver", http=http)


def shell():
    return importlib.import_module("app.ui.app")


def test_a_stack_splits_into_what_fits_a_prompt_and_a_model_and_what_does_not() -> None:
    fits, dropped = state.split_fitting([ZERO_AT_30, SCALE_AT_2], n_tokens=25, n_layers=4)
    assert (fits, dropped) == ([SCALE_AT_2], [ZERO_AT_30])
    assert state.split_fitting([ZERO_AT_30, SCALE_AT_2], n_tokens=49, n_layers=2) == ([ZERO_AT_30], [SCALE_AT_2])


def test_results_belong_only_to_their_prompt_stack_and_model() -> None:
    prompt, model = {"text": "a", "prepend_bos": True}, {"name": "tiny-random", "deltas": None}
    effect = state.effect_record(prompt, model, [SCALE_AT_2], "prompt", {"result": 1})
    assert state.effect_is_current(effect, prompt, model, [SCALE_AT_2], "prompt")
    assert not state.effect_belongs(effect, {"text": "b", "prepend_bos": True}, [SCALE_AT_2])
    assert not state.effect_belongs(effect, prompt, [SCALE_AT_2, ZERO_AT_30])
    assert not state.effect_belongs(effect, prompt, [SCALE_AT_2], {"name": "smollm2-135m", "deltas": None})
    assert not state.effect_is_current(effect, prompt, model, [SCALE_AT_2], "prose")


def test_a_stack_and_a_coordinate_round_trip_through_the_url() -> None:
    text = url_state.encode_stack([ZERO_AT_30, SCALE_AT_2])
    assert text == "1:resid_post:30:5:zero,3:attn_out:2:7:scale:0.25"
    assert url_state.decode_stack(text) == [ZERO_AT_30, SCALE_AT_2]
    assert url_state.decode_stack("1:resid_post:x:5:zero") is None and url_state.decode_stack("1:resid_post:3:5:melt") is None
    selected = {"layer": 11, "site": "resid_post", "position": 0, "dim": 507, "token": None, "value": None}
    assert url_state.decode_coordinate(url_state.encode_coordinate(selected)) == selected
    assert url_state.listed({"rules": ""}, "rules", ["a"]) == [] and url_state.listed({}, "rules", ["a"]) == ["a"]
    assert url_state.read({"steps": "7"}, "steps", url_state.number, 30) == 7 and url_state.read({"steps": "x"}, "steps", int, 30) == 30


def test_a_shared_link_sets_the_prompt_and_stack_and_a_link_without_them_leaves_the_tabs_own() -> None:
    prompt = {"text": "Summer is hot.", "prepend_bos": False}
    query = {k: v for k, v in url_state.shell_query(prompt, [SCALE_AT_2], None, {"id": "j1"}).items() if v is not None}
    assert shell().adopted(query, None, [], None, None) == (prompt, [SCALE_AT_2], dash.no_update, {"id": "j1"})
    assert shell().adopted({}, prompt, [SCALE_AT_2], None, None) == (dash.no_update,) * 4


def test_a_new_prompt_drops_the_interventions_and_the_selection_that_no_longer_fit(ui: dash.Dash) -> None:
    model = {"name": "tiny-random", "n_layers": 4, "deltas": None}
    selected = {"layer": 1, "site": "resid_post", "position": 30, "dim": 5, "token": "x", "value": 2.0}
    stack, moved, notice = shell().fit_to_prompt({"text": "Summer is hot. Winter is", "prepend_bos": True}, model, [ZERO_AT_30, SCALE_AT_2], selected)
    assert stack == [SCALE_AT_2] and moved is None
    assert "25 tokens" in str(notice) and state.describe_intervention(ZERO_AT_30) in str(notice) and "position 30" in str(notice)
    kept = {**selected, "position": 3}
    stack, moved, notice = shell().fit_to_prompt({"text": "Summer is hot. Winter is", "prepend_bos": True}, model, [SCALE_AT_2], kept)
    assert stack is dash.no_update and notice is dash.no_update
    assert moved == {**kept, "token": "m", "value": None}  # the token at position 3 of the new prompt


def test_the_step_count_says_it_spans_every_run_and_an_ended_job_says_why() -> None:
    finetune = page("finetune")
    running = {"state": "running", "step": 13, "total": 20, "params": {"steps": 10, "baselines": ["random"]}}
    assert finetune.step_line(running) == "step 13 of 20 in all (2 runs × 10 steps: mask, random)"
    assert finetune.step_line({**running, "params": {"steps": 20, "baselines": []}}) == "step 13 of 20"
    ended = {**running, "state": "cancelled", "error": "the server shut down while the job was queued or running"}
    assert "Cancelled: the server shut down" in str(finetune.ended_box(ended))


@pytest.mark.parametrize(("steps", "lr", "says"), [
    (2.5, 1e-3, "steps: give a whole number of steps, 1 or more (not 2.5)"),
    (0, 1e-3, "steps: give a whole number"),
    (None, 1e-3, "steps: give a whole number"),
    (10, 0, "learning rate: give a number above 0"),
    (10, 1e-3, None),
])
def test_the_form_refuses_in_words(steps, lr, says) -> None:
    refusal = page("finetune").form_refusal(steps, lr)
    assert refusal == says if says is None else says in refusal


def test_a_wild_learning_rate_gets_a_word() -> None:
    finetune = page("finetune")
    assert "far above the usual range" in finetune.lr_warning(1e9) and "far below" in finetune.lr_warning(1e-9)
    assert finetune.lr_warning(1e-3) is None


@pytest.fixture(scope="module")
def keyed(tiny: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dash.Dash]:
    """A UI that asks its users for the key of an API that wants one (as when served beyond loopback)."""
    settings = Settings(max_tokens=256, runs_dir=tmp_path_factory.mktemp("keyed-runs"), api_key="s3cret")
    with TestClient(create_api(settings, model=tiny)) as http:
        yield create_app("http://testserver", http=http, ask_for_key=True)
    app_context.set(None)  # Dash leaves the app of its last request as the thread's app: later tests get their own back


def test_a_ui_that_asks_for_the_key_signs_users_in_and_sends_only_their_key(keyed: dash.Dash, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTLIER_LAB_API_KEY", "s3cret")  # the server's key in the UI's environment is never sent for anyone
    web = keyed.server.test_client()
    assert "Sign in" in web.get("/_dash-layout").get_data(as_text=True)  # no workbench before signing in

    refused = web.post("/_outlier/login", data={"key": "guess", "next": "/layer?layer=2"})
    assert refused.status_code == 303 and refused.headers["Location"] == "/layer?layer=2"
    assert "outlier_lab_key=" not in (refused.headers.get("Set-Cookie") or "")
    form = str(web.get("/_dash-layout", headers={"Referer": "http://localhost/layer?layer=2"}).get_json())
    assert "The API refused that key" in form and "/layer?layer=2" in form  # said, and the form leads back to the page

    signed = web.post("/_outlier/login", data={"key": "s3cret", "next": "/layer?layer=2"})
    assert signed.status_code == 303 and signed.headers["Location"] == "/layer?layer=2"
    cookie = signed.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Expires" not in cookie  # a session cookie, out of scripts' reach
    shell_layout = web.get("/_dash-layout").get_data(as_text=True)
    assert "prompt-text" in shell_layout and "Sign out" in shell_layout

    components = importlib.import_module("app.ui.components")
    with keyed.server.test_request_context("/", headers={"Cookie": "outlier_lab_key=s3cret"}):
        assert components.api().model()["name"] == "tiny-random"
    with keyed.server.test_request_context("/"), pytest.raises(ApiProblem) as refused_call:
        components.api().model()
    assert refused_call.value.kind == "auth" and "Sign in again" in refused_call.value.message
    assert web.post("/_outlier/login", data={"key": "s3cret", "next": "//evil.example/"}).headers["Location"] == "/"


def test_signing_out_forgets_the_key(keyed: dash.Dash) -> None:
    web = keyed.server.test_client()
    web.post("/_outlier/login", data={"key": "s3cret", "next": "/"})
    out = web.post("/_outlier/logout")
    assert out.status_code == 303 and "outlier_lab_key=;" in out.headers["Set-Cookie"]
    assert "Sign in" in web.get("/_dash-layout").get_data(as_text=True)


def test_the_queue_line_says_where_this_tab_stands_behind_what_and_how_far_it_is() -> None:
    from app.ui.queue_bar import ordinal, queue_line

    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101)] == ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st"]
    theirs = {"id": "w1", "what": "an evaluation of bundled prose", "seconds": 8.0, "unit": "window", "done": 2, "total": 12, "mine": False, "cancellable": True, "cancelled": False}
    holder = {"what": "an evaluation of bundled prose", "seconds": 0.4, "mine": False, "work": "w1"}
    waiting = [{"what": "a scan", "seconds": 0.1, "mine": False, "work": None}, {"what": "a scan", "seconds": 0.1, "mine": True, "work": None}]
    line, cancel = queue_line({"holder": holder, "waiting": waiting, "works": [theirs], "position": 2})
    assert line == "Waiting for the model: 2nd in line behind an evaluation of bundled prose from another tab, window 3 of 12."
    assert cancel is None  # another tab's evaluation is not this tab's to cancel

    mine = {**theirs, "id": "w2", "mine": True, "done": 0, "total": None, "seconds": 1.2}
    line, cancel = queue_line({"holder": None, "waiting": [], "works": [mine], "position": None})
    assert (line, cancel) == ("Your evaluation of bundled prose: preparing (1 s).", "w2")

    line, _ = queue_line({"holder": holder, "waiting": [], "works": [theirs], "position": None})
    assert line == "The model is busy with an evaluation of bundled prose from another tab, window 3 of 12; your requests go between its windows."
    short = {"what": "a scan", "seconds": 0.2, "mine": False, "work": None}
    assert queue_line({"holder": short, "waiting": [], "works": [], "position": None}) == (None, None)  # a moment's work says nothing
    assert queue_line({"holder": {**short, "seconds": 3.0}, "waiting": [], "works": [], "position": None})[0] == "The model is busy: a scan from another tab (3 s so far)."


def test_masks_built_by_hand_merged_and_imported_land_in_the_notebook_as_the_api_answered_them(ui: dash.Dash) -> None:
    import base64

    components = importlib.import_module("app.ui.components")
    selection = page("selection")
    session = "units-notebook-1"
    down = "model.layers.1.mlp.down_proj.weight"
    app_context.set(ui)  # the app whose callbacks these are (an earlier test's app may be the thread's)
    with ui.server.test_request_context("/", headers={"Cookie": f"outlier_lab_notebook={session}"}):
        built = components.add_to_mask(None, dims=[{"layer": 2, "dim": 7}])
        grown = components.add_to_mask(built, parts=[{"parameter": down, "kind": "rows", "index": [3]}])
        client = components.api()
        suggestion = client.create_mask("rules", [{"parameter": down, "kind": "rows", "index": [5, 6]}])
        merged, _ = selection.merged_in(client, grown, suggestion, None)
        exported = client.export_mask(merged["id"], "json")
        imported, _ = selection.imported(client, "data:application/json;base64," + base64.b64encode(exported).decode(), "both.json")
        entries = client.notebook(session)["entries"]

    assert [e["kind"] for e in entries] == ["mask"] * 4  # newest first
    for entry, mask, how in zip(entries, (imported, merged, grown, built), ("import", "merge", "build", "build"), strict=True):
        assert how in entry["inputs"] and entry["inputs"]["mask_id"] == mask["id"]
        assert entry["results"] == {"count": mask["count"], "parts": len(mask["parts"])}
    assert entries[3]["inputs"]["build"] == {"parts": [], "dims": [{"layer": 2, "dim": 7}], "onto": None, "name": built["name"]}
    assert entries[2]["inputs"]["build"]["onto"] == built["id"]  # grown from the tab's open mask
    assert entries[1]["inputs"]["merge"]["ids"] == [grown["id"], suggestion["id"]]
    assert entries[0]["code"]["cli"] == "outlier-lab mask show both.json --json"
    assert imported["count"] == merged["count"] == grown["count"] + suggestion["count"]  # disjoint parts
