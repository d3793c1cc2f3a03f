"""`create_app(api_url)`: the Dash workbench — a shell (status, prompt, per-user stores) around six pages.

The shell polls the API's health, fetches the model description once the model serves
(and again when a fine-tune run's deltas go on, off or away: every page then redraws),
shows which deltas the served model carries with the buttons that change that, and holds
the prompt. Pages live in `app/ui/pages/`, one module each, registered with
`dash.register_page`; they read the shell's stores and never hold state of their own in
module globals, so two browser tabs never see each other's prompt, selection or mask.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs

import dash
import httpx
from dash import (
    ALL,
    ClientsideFunction,
    Input,
    Output,
    State,
    ctx,
    dcc,
    html,
    no_update,
)

from app.ui import ids, login, queue_bar, url_state
from app.ui.client import SIGN_IN_AGAIN, ApiClient, ApiProblem
from app.ui.components import (
    ASKS_FOR_KEY,
    CLIENT_ATTRIBUTE,
    api,
    listed_mask,
    problem_box,
    user_action,
)
from app.ui.state import (
    DEFAULT_PROMPT,
    PRESET_LABELS,
    PRESETS,
    deltas_line,
    describe_intervention,
    split_fitting,
)

ASSETS = Path(__file__).resolve().parents[2] / "assets"  # DESIGN.md: Dash static assets at the repository root
PAGES = Path(__file__).resolve().parent / "pages"
HEALTH_EVERY_MS = 2_000


def create_app(api_url: str, http: httpx.Client | None = None, ask_for_key: bool = False) -> dash.Dash:
    """The Dash app talking to the API at `api_url` (`http`: a ready client, for tests).

    `ask_for_key`: each user signs in with the API's key (app/ui/login.py) instead of the app
    sending $OUTLIER_LAB_API_KEY for everyone: what a UI served beyond loopback must do.
    """
    app = dash.Dash(
        "app.ui",  # the package: Dash then imports the pages as app.ui.pages.<name>, the same modules tests import
        use_pages=True,
        pages_folder=str(PAGES),
        assets_folder=str(ASSETS),
        title="Outlier Lab",
        suppress_callback_exceptions=True,  # each page's components exist only while it is shown
        update_title=None,  # no "Updating..." flicker in the tab title during long model calls
    )
    if not ask_for_key:
        setattr(app, CLIENT_ATTRIBUTE, ApiClient(api_url, http=http))
        app.layout = _shell()
        return app
    client = ApiClient(api_url, api_key="", http=http, auth_hint=SIGN_IN_AGAIN)
    setattr(app, CLIENT_ATTRIBUTE, client)
    setattr(app, ASKS_FOR_KEY, True)
    login.install(app.server, lambda key: key_refusal(client, key))
    app.layout = lambda: _shell(signed_in=True) if login.request_key() else login.form()
    return app


def key_refusal(client: ApiClient, key: str) -> str | None:
    """None when the API takes `key`; else why the user cannot sign in with it."""
    try:
        return None if client.with_key(key).accepts_key() else "The API refused that key."
    except ApiProblem as problem:
        return problem.message


def _nav() -> html.Nav:
    links = [dcc.Link(page["name"], href=page["relative_path"], className="nav-link", id={"type": ids.NAV, "path": page["path"]}) for page in dash.page_registry.values()]
    return html.Nav(links, className="nav")


def _prompt_bar() -> html.Div:
    return html.Div([
        dcc.Textarea(id=ids.PROMPT_TEXT, className="prompt-text", placeholder="Type a prompt, or pick a preset", rows=2),
        html.Div([
            dcc.Dropdown(id=ids.PROMPT_PRESET, options=[{"label": PRESET_LABELS[k], "value": k} for k in PRESETS], placeholder="Presets", clearable=False, className="preset"),
            dcc.Checklist(id=ids.PROMPT_BOS, options=[{"label": " prepend BOS", "value": "bos"}], value=["bos"], className="bos"),
            html.Button("Run", id=ids.PROMPT_RUN, className="button primary", n_clicks=0),
        ], className="prompt-controls"),
        html.Div(id=ids.PROMPT_INFO, className="prompt-info"),
    ], className="prompt-bar")


def _deltas_bar() -> html.Div:
    """What the served model computes while a fine-tune run's deltas are on it: on every page."""
    merge = dcc.ConfirmDialogProvider(
        html.Button("Merge", className="button danger"), id=ids.DELTAS_MERGE,
        message="Merge the deltas into the served model's weights for good? It computes base + deltas until the model is reloaded.",
    )
    return html.Div([
        html.Span(id=ids.DELTAS_TEXT, className="deltas-text"),
        html.Div([
            html.Button("Switch off", id=ids.DELTAS_TOGGLE, className="button", n_clicks=0),
            html.Button("Detach", id=ids.DELTAS_DETACH, className="button", n_clicks=0),
            merge,
        ], id=ids.DELTAS_CONTROLS, className="buttons"),
        html.Div(html.Button("Reload the model", id=ids.DELTAS_RELOAD, className="button", n_clicks=0,
                             title="load the served model again from its files: base weights, no deltas"), id=ids.DELTAS_RELOAD_BOX, hidden=True),
        html.Div(id=ids.DELTAS_MESSAGE),
    ], id=ids.DELTAS_BAR, className="deltas-bar", hidden=True, role="status")


def _shell(signed_in: bool = False) -> html.Div:
    """`signed_in`: the user gave the API's key (a Sign out button then sits in the header)."""
    return html.Div([
        dcc.Location(id=ids.LOCATION),
        dcc.Interval(id=ids.HEALTH_POLL, interval=HEALTH_EVERY_MS),
        dcc.Store(id=ids.HEALTH, storage_type="memory"),
        dcc.Store(id=ids.MODEL, storage_type="memory"),
        dcc.Store(id=ids.VOCAB, storage_type="memory"),
        # Session storage: one tab's state survives a reload and never leaks into another tab.
        dcc.Store(id=ids.PROMPT, storage_type="session", data=DEFAULT_PROMPT),
        dcc.Store(id=ids.SCAN, storage_type="memory"),
        dcc.Store(id=ids.SELECTED, storage_type="session"),
        dcc.Store(id=ids.INTERVENTIONS, storage_type="session", data=[]),
        dcc.Store(id=ids.EFFECT, storage_type="session"),  # results survive a reload without a re-run
        dcc.Store(id=ids.MASK, storage_type="session"),
        dcc.Store(id=ids.JOB, storage_type="session"),
        dcc.Store(id=ids.VIEWS, storage_type="session", data={}),
        dcc.Store(id=ids.SHELL_QUERY, storage_type="memory"),
        dcc.Store(id=ids.URL_READY, storage_type="memory", data=False),
        dcc.Store(id=ids.URL_SYNCED, storage_type="memory"),
        html.Header([
            html.Div([html.Span("Outlier Lab", className="brand"), _nav()], className="header-left"),
            html.Div([
                dcc.Link(html.Div("connecting…", id=ids.STATUS, className="status status-unknown"), href="/model", title="choose the served model", className="status-link"),
                login.sign_out_button() if signed_in else None,
            ], className="header-right"),
        ], className="header"),
        _deltas_bar(),
        queue_bar.layout(),
        html.Div(id=ids.BANNER),
        _prompt_bar(),
        html.Main(dash.page_container, className="page"),
    ], className="shell")


def health_state(client: ApiClient) -> dict:
    """The API's health as the shell keeps it; a down API is a state, not an error."""
    try:
        health = client.health()
    except ApiProblem as problem:
        return {"reachable": False, "ready": False, "model": None, "loading": None, "error": None, "message": problem.message, "deltas": None}
    return {
        "reachable": True, "ready": bool(health.get("ready")), "model": health.get("model"), "loading": health.get("loading"),
        "error": health.get("error"), "message": None, "deltas": health.get("deltas"),
    }


def status_view(health: dict | None) -> tuple[str, str, object]:
    """(status text, its CSS class, the banner) for a health state."""
    if health is None:
        return "connecting…", "status status-unknown", None
    if not health["reachable"]:
        return "API unreachable", "status status-down", html.Div(health["message"], className="message message-unreachable banner", role="alert")
    if health["loading"]:
        text = f"loading {health['loading']}…"
        return text, "status status-loading", html.Div(f"The API is loading the model {health['loading']}; the views fill in once it is ready.", className="message message-loading banner")
    if not health["ready"]:
        reason = health["error"] or "no model is loaded"
        return "no model", "status status-down", html.Div(f"The API has no model to serve: {reason}", className="message message-server banner", role="alert")
    return f"{health['model']} ready", "status status-ready", None


@dash.callback(Output(ids.HEALTH, "data"), Input(ids.HEALTH_POLL, "n_intervals"), State(ids.HEALTH, "data"))
def poll_health(_n: int | None, previous: dict | None) -> dict:
    current = health_state(api())
    return no_update if current == previous else current


@dash.callback(
    Output(ids.STATUS, "children"), Output(ids.STATUS, "className"), Output(ids.BANNER, "children"), Output(ids.MODEL, "data"),
    Input(ids.HEALTH, "data"), State(ids.MODEL, "data"),
)
def show_health(health: dict | None, model: dict | None):
    text, css, banner = status_view(health)
    if not health or not health["ready"]:
        return text, css, banner, None  # pages wait instead of calling a model that is not there
    if model and model.get("name") == health["model"] and model.get("deltas") == health.get("deltas"):
        return text, css, banner, no_update
    try:
        described = api().model()
    except ApiProblem as problem:
        return text, css, html.Div(problem.message, className="message message-server banner", role="alert"), None
    return f"{described['name']} · {described['n_layers']} layers · {described['device']}", css, banner, described


@dash.callback(Output(ids.VOCAB, "data"), Input(ids.HEALTH, "data"), State(ids.VOCAB, "data"))
def fetch_vocab(health: dict | None, vocab: dict | None):
    """The API's sites, rules and methods for the pages' choices, as soon as the API answers (it needs no model for them)."""
    if vocab or not (health or {}).get("reachable"):
        return no_update
    try:
        return api().vocab()
    except ApiProblem:
        return no_update  # the banner and the pages say what is wrong; the next change of health tries again


@dash.callback(
    Output(ids.DELTAS_BAR, "hidden"), Output(ids.DELTAS_TEXT, "children"), Output(ids.DELTAS_TOGGLE, "children"), Output(ids.DELTAS_CONTROLS, "hidden"),
    Input(ids.HEALTH, "data"),
)
def show_deltas(health: dict | None):
    deltas = (health or {}).get("deltas")
    if not deltas:
        return True, None, no_update, True
    return False, deltas_line(deltas), "Switch off" if deltas["enabled"] else "Switch on", deltas["merged"]


@dash.callback(Output(ids.DELTAS_RELOAD_BOX, "hidden"), Input(ids.HEALTH, "data"))
def offer_reload(health: dict | None) -> bool:
    """Merged deltas cannot be switched off or detached: the way back is to reload the model."""
    return not ((health or {}).get("deltas") or {}).get("merged")


@dash.callback(
    Output(ids.HEALTH, "data", allow_duplicate=True), Output(ids.DELTAS_MESSAGE, "children"),
    Input(ids.DELTAS_TOGGLE, "n_clicks"), Input(ids.DELTAS_DETACH, "n_clicks"), Input(ids.DELTAS_MERGE, "submit_n_clicks"),
    State(ids.HEALTH, "data"),
    prevent_initial_call=True,
)
def change_deltas(_toggle: int, _detach: int, _merge: int | None, health: dict | None):
    """Switch, detach or merge; the answer goes straight into the health store, so the bar and
    every page follow at once instead of at the next poll."""
    action, deltas = user_action(), (health or {}).get("deltas")
    if action is None or not deltas:
        return no_update, no_update
    try:
        deltas = changed_deltas(api(), action, deltas)
    except ApiProblem as problem:
        return no_update, problem_box(problem, "change the deltas")
    return {**health, "deltas": deltas}, None


def changed_deltas(client: ApiClient, action: str, deltas: dict) -> dict | None:
    """What the served model carries after a press on the bar's switch, detach or merge button."""
    if action == ids.DELTAS_TOGGLE:
        return client.switch_deltas(not deltas["enabled"])["applied"]
    if action == ids.DELTAS_DETACH:
        client.detach_deltas()
        return None
    return client.merge_deltas()["applied"]


# In the browser: the box shows the tab's prompt the moment the page loads (no round trip for a
# user's typing to race), and whenever the prompt changes (a shared link).
dash.clientside_callback(
    """function(prompt) {
        if (!prompt) return [window.dash_clientside.no_update, window.dash_clientside.no_update];
        return [prompt.text, prompt.prepend_bos ? ["bos"] : []];
    }""",
    Output(ids.PROMPT_TEXT, "value"), Output(ids.PROMPT_BOS, "value"), Input(ids.PROMPT, "data"),
)


@dash.callback(Output(ids.PROMPT_TEXT, "value", allow_duplicate=True), Input(ids.PROMPT_PRESET, "value"), prevent_initial_call=True)
def fill_prompt(preset: str | None):
    """A preset fills the box; Run makes it the prompt."""
    return PRESETS[preset] if preset else no_update


@dash.callback(
    Output(ids.PROMPT, "data"), Output(ids.PROMPT_INFO, "children"),
    Input(ids.PROMPT_RUN, "n_clicks"), Input(ids.PROMPT_BOS, "value"),
    State(ids.PROMPT_TEXT, "value"), State(ids.PROMPT, "data"),
    prevent_initial_call=True,
)
def set_prompt(_clicks: int, bos: list[str], text: str | None, current: dict | None):
    if not text or not text.strip():
        return no_update, "Type a prompt first."
    prompt = {"text": text, "prepend_bos": "bos" in (bos or [])}
    if prompt == current:
        return no_update, ""
    return prompt, ""


@dash.callback(
    Output(ids.INTERVENTIONS, "data", allow_duplicate=True), Output(ids.SELECTED, "data", allow_duplicate=True),
    Output(ids.PROMPT_INFO, "children", allow_duplicate=True),
    Input(ids.PROMPT, "data"), Input(ids.MODEL, "data"), State(ids.INTERVENTIONS, "data"), State(ids.SELECTED, "data"),
    prevent_initial_call=True,
)
def fit_to_prompt(prompt: dict | None, model: dict | None, stack: list[dict] | None, selected: dict | None):
    """After a new prompt or model, the interventions and the selected coordinate that no longer fit
    are dropped, and the prompt bar says which: nothing is left behind to fail."""
    if not model or not prompt:
        return no_update, no_update, no_update
    try:
        tokens = api().tokenize(prompt["text"], prompt["prepend_bos"])["tokens"]
    except ApiProblem as problem:
        return no_update, no_update, problem_box(problem, "read the prompt")
    fits, dropped = split_fitting(stack or [], len(tokens), model["n_layers"])
    moved = fitted_selection(selected, tokens, model["n_layers"])
    notice = dropped_notice(dropped, selected if moved is None and selected else None, len(tokens))
    return (fits if dropped else no_update), (moved if moved != selected else no_update), notice or no_update


def fitted_selection(selected: dict | None, tokens: list[str], n_layers: int) -> dict | None:
    """The selected coordinate on the new prompt (its token read again), or None when it does not fit."""
    if not selected:
        return None
    if selected["position"] >= len(tokens) or selected["layer"] >= n_layers:
        return None
    return {**selected, "token": tokens[selected["position"]], "value": None}


def dropped_notice(dropped: list[dict], lost_selection: dict | None, n_tokens: int) -> html.Div | None:
    if not dropped and not lost_selection:
        return None
    lines = [html.Li(describe_intervention(item)) for item in dropped]
    if lost_selection:
        lines.append(html.Li(f"the selected coordinate (layer {lost_selection['layer']}, position {lost_selection['position']}, dim {lost_selection['dim']})"))
    lead = f"The prompt has {n_tokens} tokens on this model; dropped what no longer fits it:"
    return html.Div([lead, html.Ul(lines, className="stack")], className="message message-input", id="prompt-dropped", role="status")


@dash.callback(
    Output(ids.PROMPT, "data", allow_duplicate=True), Output(ids.INTERVENTIONS, "data", allow_duplicate=True), Output(ids.MASK, "data", allow_duplicate=True),
    Output(ids.JOB, "data", allow_duplicate=True), Output(ids.URL_READY, "data"),
    Input(ids.LOCATION, "search"),
    State(ids.PROMPT, "data"), State(ids.INTERVENTIONS, "data"), State(ids.MASK, "data"), State(ids.JOB, "data"),
    prevent_initial_call="initial_duplicate",
)
def adopt_url(search: str | None, prompt: dict | None, stack: list | None, mask: dict | None, job: dict | None):
    """A URL that carries a prompt, a stack, a mask or a job (a shared link, a reload) sets them in
    this tab; a key it lacks leaves the tab's own value."""
    if search is None:  # the location is not read yet
        return no_update, no_update, no_update, no_update, no_update
    query = {key: values[-1] for key, values in parse_qs(search.lstrip("?"), keep_blank_values=True).items()}
    return (*adopted(query, prompt, stack, mask, job), True)


def adopted(query: dict, prompt: dict | None, stack: list | None, mask: dict | None, job: dict | None) -> tuple:
    """(prompt, stack, mask, job) as the query sets them; no_update for each it leaves alone."""
    wanted_prompt = {"text": query["prompt"], "prepend_bos": query.get("bos", "1") != "0"} if query.get("prompt") else None
    wanted_stack = url_state.decode_stack(query["stack"]) if "stack" in query else None
    new_mask = no_update
    if query.get("mask") and query["mask"] != (mask or {}).get("id"):
        try:
            new_mask = listed_mask(query["mask"]) or no_update
        except ApiProblem:
            new_mask = no_update
    return (
        wanted_prompt if wanted_prompt and wanted_prompt != prompt else no_update,
        wanted_stack if wanted_stack is not None and wanted_stack != stack else no_update,
        new_mask,
        {"id": query["job"]} if query.get("job") and query["job"] != (job or {}).get("id") else no_update,
    )


@dash.callback(
    Output(ids.SHELL_QUERY, "data"),
    Input(ids.PROMPT, "data"), Input(ids.INTERVENTIONS, "data"), Input(ids.MASK, "data"), Input(ids.JOB, "data"), Input(ids.URL_READY, "data"),
)
def write_shell_query(prompt: dict | None, stack: list | None, mask: dict | None, job: dict | None, ready: bool):
    if not ready:
        return no_update  # the URL still holds what the tab opened with: adopt it before writing over it
    return url_state.shell_query(prompt, stack, mask, job)


dash.clientside_callback(
    ClientsideFunction("outlier", "writeShell"),
    Output(ids.URL_SYNCED, "data"), Input(ids.SHELL_QUERY, "data"), Input(ids.LOCATION, "pathname"), Input(ids.LOCATION, "search"),
)


@dash.callback(Output({"type": ids.NAV, "path": ALL}, "href"), Input(ids.VIEWS, "data"))
def nav_links(views: dict | None):
    """Each nav link reopens its page as it was left (the shell's keys join the URL on arrival)."""
    views = views or {}
    paths = [output["id"]["path"] for output in ctx.outputs_list]
    return [dash.get_relative_path(path) + (f"?{views[path]}" if views.get(path) else "") for path in paths]


@dash.callback(
    Output(ids.HEALTH, "data", allow_duplicate=True), Output(ids.DELTAS_MESSAGE, "children", allow_duplicate=True),
    Input(ids.DELTAS_RELOAD, "n_clicks"), State(ids.HEALTH, "data"),
    prevent_initial_call=True,
)
def reload_model(_n: int, health: dict | None):
    """Load the served model again from its files: base weights, no deltas (the way back after a merge)."""
    if user_action() is None or not (health or {}).get("model"):
        return no_update, no_update
    try:
        api().load_model(health["model"])
    except ApiProblem as problem:
        return no_update, problem_box(problem, f"reload {health['model']}")
    return {**health, "ready": False, "loading": health["model"], "deltas": None}, None
