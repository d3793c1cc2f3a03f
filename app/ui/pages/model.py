"""Model: choose the model the API serves — a registry name, a Hugging Face id from the server's
cache, or a local directory, as the server allows — and follow its load. Every page follows the
switch: the shell fetches the new description, and the pages redraw on it."""

from __future__ import annotations

import time

import dash
from dash import Input, Output, State, dcc, html, no_update

from app.ui import ids
from app.ui.client import ApiProblem
from app.ui.components import (
    api,
    card,
    labelled,
    note,
    problem_box,
    spinner,
    table,
    user_action,
)

dash.register_page(__name__, path="/model", name="Model", order=7, title="Outlier Lab · Model")

POLL_MS = 500  # while a load runs this page asks the API how far it has come, between the shell's polls
LOAD = "md-load"
RELOAD = "md-reload"
REGISTRY = "md-registry"
OTHER = "md-other"
DEVICE = "md-device"
DTYPE = "md-dtype"
CURRENT = "md-current"
PROGRESS = "md-progress"
MESSAGE = "md-message"
ASKED = "md-asked"  # {"name", "since"}: the load this tab asked for, to say how long it has taken
POLL = "md-poll"
DEVICES = {"": "the server's default", "cpu": "cpu", "cuda": "cuda"}
DTYPES = {"": "the server's default", "float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def layout(**_query) -> html.Div:
    return html.Div([
        dcc.Store(id=ASKED, storage_type="session"),
        dcc.Interval(id=POLL, interval=POLL_MS),
        card("Served model", html.Div(id=CURRENT), html.Div(id=PROGRESS, role="status")),
        card("Load another model",
             labelled("From the registry", dcc.RadioItems(id=REGISTRY, options=[], value=None)),
             labelled("Or a Hugging Face id or a local directory", dcc.Input(id=OTHER, type="text", placeholder="HuggingFaceTB/SmolLM2-360M or /models/my-llama", debounce=False),
                      "ids are read from the server's Hugging Face cache; directories only under the server's model directories (OUTLIER_LAB_MODEL_DIRS)"),
             html.Div([
                 labelled("Device", dcc.Dropdown(id=DEVICE, options=[{"label": v, "value": k} for k, v in DEVICES.items()], value="", clearable=False)),
                 labelled("Precision", dcc.Dropdown(id=DTYPE, options=[{"label": v, "value": k} for k, v in DTYPES.items()], value="", clearable=False)),
             ], className="controls"),
             html.Div([
                 html.Button("Load", id=LOAD, className="button primary", n_clicks=0),
                 html.Button("Reload the served model", id=RELOAD, className="button", n_clicks=0,
                             title="load it again from its files: undoes merged deltas and any other change to the weights"),
             ], className="buttons"),
             spinner(html.Div(id=MESSAGE))),
    ])


@dash.callback(Output(REGISTRY, "options"), Output(REGISTRY, "value"), Input(ids.HEALTH, "data"), State(REGISTRY, "value"))
def offer_registry(health: dict | None, chosen: str | None):
    if not (health or {}).get("reachable"):
        return no_update, no_update
    try:
        models = api().models()["models"]
    except ApiProblem:
        return no_update, no_update
    offered = [{"label": f"{m['name']} — {m['description']}", "value": m["name"]} for m in models]
    return offered, chosen or health.get("model")


def described(model: dict | None, health: dict | None) -> html.Div:
    if not model:
        return note("No model serves right now." if not (health or {}).get("loading") else "Loading…")
    rows = [["name", model["name"]], ["layers", model["n_layers"]], ["d_model", model["d_model"]], ["heads", model["n_heads"]],
            ["parameters", f"{model['n_params']:,}"], ["device", model["device"]], ["precision", model["dtype"]], ["longest prompt", f"{model['max_tokens']:,} tokens"]]
    return table(["", ""], rows, class_name="model-table")


@dash.callback(Output(CURRENT, "children"), Output(PROGRESS, "children"), Input(ids.MODEL, "data"), Input(ids.HEALTH, "data"), Input(POLL, "n_intervals"), State(ASKED, "data"))
def show_state(model: dict | None, health: dict | None, _n, asked: dict | None):
    if (health or {}).get("loading"):
        health = fresh_health(health)
    return described(model, health), load_progress(health, asked)


def fresh_health(health: dict) -> dict:
    """The API's health now, with the load's progress (the shell's store polls less often and keeps no progress)."""
    try:
        return {**health, **api().health()}
    except ApiProblem:
        return health


def load_progress(health: dict | None, asked: dict | None) -> html.Div | None:
    """What is happening and how far along: the stage the API reports (with a bar where it counts
    what it reads), and the time so far for the load this tab asked for."""
    health = health or {}
    if health.get("loading"):
        parts = [f"Loading {health['loading']}"]
        progress = health.get("progress") or {}
        if progress.get("text"):
            parts.append(progress["text"])
        if asked and asked.get("name") == health["loading"]:
            parts.append(f"{time.time() - asked['since']:.0f} s so far")
        text = html.Div(" · ".join(parts) + "…", className="message message-loading", id="md-loading")
        if not progress.get("total"):
            return text
        bar = html.Progress(value=str(progress.get("done") or 0), max=str(progress["total"]), id="md-progress-bar", title=progress["text"])
        return html.Div([text, bar])
    if health.get("error"):
        return problem_box(health["error"])
    if asked and health.get("ready") and asked.get("name") == health.get("model"):
        return note(f"Serving {health['model']}: every page now shows it.", "ok")
    return None


@dash.callback(
    Output(MESSAGE, "children"), Output(ASKED, "data"), Output(ids.HEALTH, "data", allow_duplicate=True),
    Input(LOAD, "n_clicks"), Input(RELOAD, "n_clicks"),
    State(REGISTRY, "value"), State(OTHER, "value"), State(DEVICE, "value"), State(DTYPE, "value"), State(ids.HEALTH, "data"),
    running=[(Output(LOAD, "disabled"), True, False), (Output(RELOAD, "disabled"), True, False)],
    prevent_initial_call=True,
)
def load(_l: int, _r: int, registry: str | None, other: str | None, device: str, dtype: str, health: dict | None):
    """Ask the API to load a model; the health store says so at once, so every page stops asking the old one."""
    action = user_action()
    if action is None:
        return no_update, no_update, no_update
    name = (health or {}).get("model") if action == RELOAD else (other or "").strip() or registry
    if not name:
        return problem_box("Pick a model from the registry, or type an id or a directory."), no_update, no_update
    try:
        api().load_model(name, device or None, dtype or None)
    except ApiProblem as problem:
        return problem_box(problem, f"load {name}"), no_update, no_update
    loading = {**(health or {}), "ready": False, "loading": name, "error": None}
    return note(f"Loading {name}; this page follows it."), {"name": name, "since": time.time()}, loading
