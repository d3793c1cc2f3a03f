"""Selection: the tab's mask — what is in it and why, its parameter count — built from clicks
in the other views or suggested by the outlier rules under a budget; export and import."""

from __future__ import annotations

import base64

import dash
from dash import Input, Output, State, dcc, html, no_update

from app.ui import ids, url_state
from app.ui.client import ApiClient, ApiProblem
from app.ui.components import (
    api,
    card,
    labelled,
    mask_line,
    note,
    problem_box,
    spinner,
    table,
    user_action,
    view_in_url,
)
from app.ui.state import options

dash.register_page(__name__, path="/selection", name="Selection", order=4, title="Outlier Lab · Selection")

MOUNTED = "sl-mounted"  # part of the page: an input that makes the page's first draw happen (see layer.py)
SAVED = "sl-saved"
OPEN = "sl-open"
SOURCE = "sl-source"
SOURCES = {"prompt": "the prompt", "corpus": "bundled prose"}


def layout(**query) -> html.Div:
    source = query.get("source") if query.get("source") in SOURCES else "prompt"
    return html.Div([
        dcc.Store(id=ids.SL_QUERY),
        dcc.Store(id=MOUNTED, data=True),
        spinner(html.Div(id=ids.SL_MESSAGE)),  # suggest and import take a forward pass or a file check
        card("Current mask",
             spinner(html.Div(id=ids.SL_SUMMARY), html.Div(id=ids.SL_TABLE, className="table-scroll")),
             html.Div([
                 html.Button("Export JSON", id=ids.SL_EXPORT_JSON, className="button", n_clicks=0),
                 html.Button("Export safetensors", id=ids.SL_EXPORT_ST, className="button", n_clicks=0),
                 html.Button("Clear", id=ids.SL_CLEAR, className="button danger", n_clicks=0),
             ], className="buttons"),
             dcc.Download(id=ids.SL_DOWNLOAD)),
        html.Div([
            card("Suggest from outliers",
                 html.Div([
                     labelled("Name", dcc.Input(id=ids.SL_NAME, type="text", value=query.get("name") or "outlier rules")),
                     labelled("Budget (parameters)", dcc.Input(id=ids.SL_BUDGET, type="number", value=url_state.read(query, "budget", int, 4096), min=1, step=1)),
                     labelled("Layer window n", dcc.Input(id=ids.SL_WINDOW, type="number", value=url_state.read(query, "window", int, 0), min=0, step=1),
                              "keep one norm layer per ±n (0: off)"),
                     labelled("Read activations of", dcc.RadioItems(id=SOURCE, options=[{"label": v, "value": k} for k, v in SOURCES.items()], value=source)),
                 ], className="controls"),
                 labelled("Rules, in priority order", dcc.Checklist(id=ids.SL_RULES, options=[], value=url_state.listed(query, "rules", None))),
                 html.Div([html.Button("Suggest", id=ids.SL_SUGGEST, className="button primary", n_clicks=0)], className="buttons"),
                 class_name="half"),
            card("Import or reopen",
                 dcc.Upload(id=ids.SL_UPLOAD, children=html.Div("Drop a MASK.json or MASK.safetensors here, or click to choose"), className="upload", multiple=False),
                 labelled("Masks on the server", dcc.Dropdown(id=SAVED, options=[], placeholder="pick a saved mask")),
                 html.Div([html.Button("Open", id=OPEN, className="button", n_clicks=0)], className="buttons"),
                 class_name="half"),
        ], className="row"),
    ])


@dash.callback(Output(ids.SL_RULES, "options"), Output(ids.SL_RULES, "value"), Input(ids.VOCAB, "data"), State(ids.SL_RULES, "value"))
def offer_rules(vocab: dict | None, ticked: list[str] | None = None):
    """Every mask rule in the API's default priority order, all ticked unless the URL ticked some."""
    if not vocab:
        return no_update, no_update
    return options(vocab["mask_rules"]), list(vocab["mask_rules"]) if ticked is None else no_update


@dash.callback(Output(SAVED, "options"), Input(ids.MASK, "data"), Input(ids.MODEL, "data"), Input(MOUNTED, "data"))
def list_saved(_mask: dict | None, model: dict | None, _mounted: bool):
    if not model:
        return []
    try:
        masks = api().masks()["masks"]
    except ApiProblem:
        return []  # the list is a convenience; the page says what is wrong elsewhere
    return [{"label": f"{m['name']} · {m['count']:,} · {m['model']['name']} · {m['id']}", "value": m["id"]} for m in masks]


@dash.callback(
    Output(ids.MASK, "data", allow_duplicate=True), Output(ids.SL_MESSAGE, "children"),
    Input(ids.SL_SUGGEST, "n_clicks"), Input(ids.SL_CLEAR, "n_clicks"), Input(ids.SL_UPLOAD, "contents"), Input(OPEN, "n_clicks"),
    State(ids.SL_UPLOAD, "filename"), State(ids.SL_NAME, "value"), State(ids.SL_BUDGET, "value"), State(ids.SL_WINDOW, "value"),
    State(SOURCE, "value"), State(ids.SL_RULES, "value"), State(SAVED, "value"), State(ids.PROMPT, "data"),
    prevent_initial_call=True,
)
def change_mask(_s, _c, contents: str | None, _o, filename: str | None, name: str | None, budget: int | None, window: int | None,
                source: str, rules: list[str], saved: str | None, prompt: dict):
    action = user_action()
    if action is None:
        return no_update, no_update
    if action == ids.SL_CLEAR:
        return None, note("Cleared. The mask stays on the server; reopen it below.")
    try:
        if action == ids.SL_SUGGEST:
            return suggested(api(), name, budget, window, rules, prompt["text"] if source == "prompt" else None, prompt["prepend_bos"])
        if action == ids.SL_UPLOAD:
            return imported(api(), contents, filename)
        return reopened(api(), saved)
    except ApiProblem as problem:
        return no_update, problem_box(problem, "change the mask")


def suggested(client: ApiClient, name: str | None, budget: int | None, window: int | None, rules: list[str], text: str | None, prepend_bos: bool) -> tuple:
    """(mask, message) of a suggestion within the budget, or why none was asked for. Raises ApiProblem."""
    if not budget or budget < 1:
        return no_update, problem_box("budget: give a whole number of parameters >= 1")
    if not rules:
        return no_update, problem_box("rules: tick at least one rule")
    found = client.suggest_mask(int(budget), text, prepend_bos, rules, int(window or 0), name or "outlier rules")
    labels = client.vocab()["mask_rules"]
    counted = ", ".join(f"{labels[r]['label'].split(' (')[0]}: {n:,}" for r, n in found["found"].items())
    return found["mask"], note(f"Suggested within a budget of {found['budget']:,}. Before trimming, the rules found {counted}.", "ok")


def imported(client: ApiClient, contents: str | None, filename: str | None) -> tuple:
    """(mask, message) of an uploaded MASK.json or MASK.safetensors. Raises ApiProblem."""
    if not contents:
        return no_update, no_update
    mask = client.import_mask(filename or "mask", base64.b64decode(contents.split(",", 1)[1]))
    return mask, note(f"Imported {filename}.", "ok")


def reopened(client: ApiClient, saved: str | None) -> tuple:
    """(mask, message) of a mask saved on the server. Raises ApiProblem."""
    if not saved:
        return no_update, problem_box("Pick a saved mask first.")
    return client.mask(saved), None


@dash.callback(Output(ids.SL_SUMMARY, "children"), Output(ids.SL_TABLE, "children"), Input(ids.MASK, "data"), Input(MOUNTED, "data"))
def show_mask(mask: dict | None, _mounted: bool):
    if not mask:
        return note("No mask yet: suggest one, import one, or add coordinates from the Layer explorer and Weights views."), None
    rows = [[p["parameter"], p["kind"], f"{p['size']:,}", p["source"]] for p in mask["parts"]]
    return html.Div(mask_line(mask), className="mask-line", id="sl-mask-line"), table(["parameter", "kind", "size", "source"], rows)


@dash.callback(
    Output(ids.SL_DOWNLOAD, "data"), Output(ids.SL_MESSAGE, "children", allow_duplicate=True),
    Input(ids.SL_EXPORT_JSON, "n_clicks"), Input(ids.SL_EXPORT_ST, "n_clicks"), State(ids.MASK, "data"),
    prevent_initial_call=True,
)
def export(_j, _s, mask: dict | None):
    action = user_action()
    if action is None:
        return no_update, no_update
    if not mask:
        return no_update, problem_box("There is no mask to export yet.")
    file_format = "json" if action == ids.SL_EXPORT_JSON else "safetensors"
    try:
        data = api().export_mask(mask["id"], file_format)
    except ApiProblem as problem:
        return no_update, problem_box(problem, "export the mask")
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in mask["name"]).strip("-.") or "mask"
    return dcc.send_bytes(data, f"{safe}.{file_format}"), None


view_in_url("/selection", ids.SL_QUERY, {
    "name": Input(ids.SL_NAME, "value"), "budget": Input(ids.SL_BUDGET, "value"), "window": Input(ids.SL_WINDOW, "value"), "source": Input(SOURCE, "value"),
    "rules": Input(ids.SL_RULES, "value"),
})
