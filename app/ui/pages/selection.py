"""Selection: the tab's mask — what is in it and why, its parameter count — built from clicks
in the other views or suggested by the outlier rules under a budget (replacing the open mask or
merged into it, with undo); export and import; the masks on the server, named, opened, renamed,
deleted; one part at a time removed."""

from __future__ import annotations

import base64

import dash
from dash import ALL, Input, Output, State, dcc, html, no_update

from app.ui import ids, url_state
from app.ui.client import ApiClient, ApiProblem
from app.ui.components import (
    api,
    card,
    labelled,
    listed_mask,
    mask_line,
    note,
    problem_box,
    record,
    record_mask,
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
MODE = "sl-mode"  # what a suggestion does to the open mask
MODES = {"replace": "replace it", "merge": "merge the suggestion into it"}
HISTORY = "sl-history"  # {"seen": the open mask {"id", "name"} or None, "back": earlier ones, newest last}
UNDO = "sl-undo"
UNDO_DEPTH = 20
SAVED_TABLE = "sl-saved-table"
SAVED_BUTTON = "sl-saved-button"  # pattern id {"type": SAVED_BUTTON, "mask", "action": "open" | "delete"}
LISTED = "sl-listed"  # bumped when a mask is deleted: the list is read again
PART_DROP = "sl-part-drop"  # pattern id {"type": PART_DROP, "index": i}: remove part i of the open mask
RENAME = "sl-rename"
RENAME_BUTTON = "sl-rename-button"


def layout(**query) -> html.Div:
    source = query.get("source") if query.get("source") in SOURCES else "prompt"
    return html.Div([
        dcc.Store(id=ids.SL_QUERY),
        dcc.Store(id=MOUNTED, data=True),
        dcc.Store(id=HISTORY, storage_type="session"),
        dcc.Store(id=LISTED, data=0),
        spinner(html.Div(id=ids.SL_MESSAGE)),  # suggest and import take a forward pass or a file check
        card("Current mask",
             spinner(html.Div(id=ids.SL_SUMMARY), html.Div(id=ids.SL_TABLE, className="table-scroll")),
             html.Div([
                 html.Button("Export JSON", id=ids.SL_EXPORT_JSON, className="button", n_clicks=0),
                 html.Button("Export safetensors", id=ids.SL_EXPORT_ST, className="button", n_clicks=0),
                 html.Button("Clear", id=ids.SL_CLEAR, className="button danger", n_clicks=0),
                 html.Button("Undo", id=UNDO, className="button", n_clicks=0, disabled=True),
             ], className="buttons"),
             html.Div([dcc.Input(id=RENAME, type="text", placeholder="a name for this mask", debounce=False),
                       html.Button("Rename", id=RENAME_BUTTON, className="button", n_clicks=0)], className="buttons"),
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
                 labelled("With a mask open", dcc.RadioItems(id=MODE, options=[{"label": v, "value": k} for k, v in MODES.items()],
                                                             value=query.get("mode") if query.get("mode") in MODES else "replace", inline=True)),
                 html.Div([html.Button("Suggest", id=ids.SL_SUGGEST, className="button primary", n_clicks=0)], className="buttons"),
                 class_name="half"),
            card("Import or reopen",
                 dcc.Upload(id=ids.SL_UPLOAD, children=html.Div("Drop a MASK.json or MASK.safetensors here, or click to choose"), className="upload", multiple=False),
                 labelled("Masks on the server", dcc.Dropdown(id=SAVED, options=[], placeholder="pick a saved mask")),
                 html.Div([html.Button("Open", id=OPEN, className="button", n_clicks=0)], className="buttons"),
                 class_name="half"),
        ], className="row"),
        card("Masks on the server", html.Div(id=SAVED_TABLE, className="table-scroll")),
    ])


@dash.callback(Output(ids.SL_RULES, "options"), Output(ids.SL_RULES, "value"), Input(ids.VOCAB, "data"), State(ids.SL_RULES, "value"))
def offer_rules(vocab: dict | None, ticked: list[str] | None = None):
    """Every mask rule in the API's default priority order, all ticked unless the URL ticked some."""
    if not vocab:
        return no_update, no_update
    return options(vocab["mask_rules"]), list(vocab["mask_rules"]) if ticked is None else no_update


@dash.callback(Output(SAVED, "options"), Output(SAVED_TABLE, "children"), Input(ids.MASK, "data"), Input(ids.MODEL, "data"), Input(MOUNTED, "data"), Input(LISTED, "data"))
def list_saved(mask: dict | None, model: dict | None, _mounted: bool, _listed: int = 0):
    if not model:
        return [], None
    try:
        masks = api().masks()["masks"]
    except ApiProblem as problem:
        return [], problem_box(problem, "list the masks")
    picks = [{"label": f"{m['name']} · {m['count']:,} · {m['model']['name']} · {m['id']}", "value": m["id"]} for m in masks]
    return picks, saved_table(masks, (mask or {}).get("id"))


def saved_table(masks: list[dict], open_id: str | None) -> html.Table | html.Div:
    if not masks:
        return note("No masks on the server yet.")
    rows, css = [], []
    for m in masks:
        buttons = [html.Button("Open", id={"type": SAVED_BUTTON, "mask": m["id"], "action": "open"}, className="button", n_clicks=0, disabled=m["id"] == open_id),
                   html.Button("Delete", id={"type": SAVED_BUTTON, "mask": m["id"], "action": "delete"}, className="button danger", n_clicks=0)]
        rows.append([m["name"], f"{m['count']:,}", len(m["parts"]), m["model"]["name"], m["id"], html.Div(buttons, className="buttons")])
        css.append("open" if m["id"] == open_id else "")
    return table(["name", "parameters", "parts", "model", "id", ""], rows, class_name="saved-table", row_ids=css)


@dash.callback(
    Output(ids.MASK, "data", allow_duplicate=True), Output(ids.SL_MESSAGE, "children"),
    Input(ids.SL_SUGGEST, "n_clicks"), Input(ids.SL_CLEAR, "n_clicks"), Input(ids.SL_UPLOAD, "contents"), Input(OPEN, "n_clicks"),
    State(ids.SL_UPLOAD, "filename"), State(ids.SL_NAME, "value"), State(ids.SL_BUDGET, "value"), State(ids.SL_WINDOW, "value"),
    State(SOURCE, "value"), State(ids.SL_RULES, "value"), State(SAVED, "value"), State(ids.PROMPT, "data"), State(MODE, "value"), State(ids.MASK, "data"), State(ids.MODEL, "data"),
    prevent_initial_call=True,
)
def change_mask(_s, _c, contents: str | None, _o, filename: str | None, name: str | None, budget: int | None, window: int | None,
                source: str, rules: list[str], saved: str | None, prompt: dict, mode: str = "replace", current: dict | None = None, model: dict | None = None):
    action = user_action()
    if action is None:
        return no_update, no_update
    if action == ids.SL_CLEAR:
        return None, note("Cleared. The mask stays on the server; reopen it below, or Undo.")
    try:
        if action == ids.SL_SUGGEST:
            text = prompt["text"] if source == "prompt" else None
            mask, message = suggested(api(), name, budget, window, rules, text, prompt["prepend_bos"])
            if not isinstance(mask, dict):
                return mask, message
            asked = {"budget": int(budget), "text": text, "prepend_bos": prompt["prepend_bos"], "rules": rules, "window": int(window or 0), "name": name or "outlier rules"}
            record("mask", f"suggested {mask_line(mask)}", model, {"suggest": asked, "mask_id": mask["id"]}, {"count": mask["count"], "parts": len(mask["parts"])})
            return merged_in(api(), current, mask, message) if mode == "merge" and current else (mask, message)
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


def merged_in(client: ApiClient, current: dict, suggestion: dict, message: html.Div) -> tuple:
    """(the open mask and the suggestion merged into a new mask, message); the open mask stays as it
    was (Undo goes back to it) and the suggestion, now inside the merge, leaves the server's list. Raises ApiProblem."""
    name = f"{current['name']} + {suggestion['name']}"
    merged = client.merge_masks([current["id"], suggestion["id"]], name)
    record_mask(f"merged {name}: {mask_line(merged)}", {"merge": {"ids": [current["id"], suggestion["id"]], "name": name}}, merged)
    client.delete_mask(suggestion["id"])
    return merged, html.Div([message, note(f"Merged into {current['name']}: now {mask_line(merged)}. Undo goes back to {current['name']}.", "ok")])


def imported(client: ApiClient, contents: str | None, filename: str | None) -> tuple:
    """(mask, message) of an uploaded MASK.json or MASK.safetensors. Raises ApiProblem."""
    if not contents:
        return no_update, no_update
    mask = client.import_mask(filename or "mask", base64.b64decode(contents.split(",", 1)[1]))
    record_mask(f"imported {filename}: {mask_line(mask)}", {"import": {"filename": filename or "mask"}}, mask)
    return mask, note(f"Imported {filename}.", "ok")


def reopened(client: ApiClient, saved: str | None) -> tuple:
    """(mask, message) of a mask saved on the server. Raises ApiProblem."""
    if not saved:
        return no_update, problem_box("Pick a saved mask first.")
    return listed_mask(saved) or no_update, None


@dash.callback(Output(ids.SL_SUMMARY, "children"), Output(ids.SL_TABLE, "children"), Input(ids.MASK, "data"), Input(MOUNTED, "data"))
def show_mask(mask: dict | None, _mounted: bool):
    if not mask:
        return note("No mask yet: suggest one, import one, or add coordinates from the Layer explorer and Weights views."), None
    rows = [[p["parameter"], p["kind"], f"{p['size']:,}", p["source"],
             html.Button("×", id={"type": PART_DROP, "index": i}, className="button drop", n_clicks=0, title="remove this part from the mask")]
            for i, p in enumerate(mask["parts"])]
    return html.Div(mask_line(mask), className="mask-line", id="sl-mask-line"), table(["parameter", "kind", "size", "source", ""], rows, class_name="parts-table")


@dash.callback(Output(RENAME, "value"), Input(ids.MASK, "data"), Input(MOUNTED, "data"))
def show_name(mask: dict | None, _mounted: bool):
    return mask["name"] if mask else ""


@dash.callback(
    Output(ids.MASK, "data", allow_duplicate=True), Output(ids.SL_MESSAGE, "children", allow_duplicate=True),
    Input({"type": PART_DROP, "index": ALL}, "n_clicks"), Input(RENAME_BUTTON, "n_clicks"), State(RENAME, "value"), State(ids.MASK, "data"),
    prevent_initial_call=True,
)
def edit_mask(_drops: list[int], _rename: int, name: str | None, mask: dict | None):
    """Remove one part of the open mask, or rename it (on the server: every tab and run sees it)."""
    action = user_action()
    if action is None or not mask:
        return no_update, no_update
    try:
        if action == RENAME_BUTTON:
            if not name or not name.strip():
                return no_update, problem_box("name: give the mask a name")
            renamed = api().rename_mask(mask["id"], name)
            return renamed, note(f"Renamed to {renamed['name']}.", "ok")
        part = mask["parts"][action["index"]]
        left = api().remove_part(mask["id"], action["index"])
    except ApiProblem as problem:
        return no_update, problem_box(problem, "change the mask")
    return left, note(f"Removed the {part['kind']} part of {part['parameter']} ({part['source']}). Now {mask_line(left)}.", "ok")


@dash.callback(
    Output(ids.MASK, "data", allow_duplicate=True), Output(ids.SL_MESSAGE, "children", allow_duplicate=True), Output(LISTED, "data"),
    Input({"type": SAVED_BUTTON, "mask": ALL, "action": ALL}, "n_clicks"), State(ids.MASK, "data"), State(LISTED, "data"),
    prevent_initial_call=True,
)
def saved_button(_clicks: list[int], mask: dict | None, listed: int):
    """Open a mask of the server's list, or delete it (the open mask closes when it is the one deleted)."""
    target = user_action()
    if not isinstance(target, dict):
        return no_update, no_update, no_update
    try:
        if target["action"] == "open":
            return listed_mask(target["mask"]) or no_update, None, no_update
        api().delete_mask(target["mask"])
    except ApiProblem as problem:
        return no_update, problem_box(problem, f"{target['action']} the mask"), no_update
    closed = None if mask and mask["id"] == target["mask"] else no_update
    return closed, note(f"Deleted mask {target['mask']}.", "ok"), (listed or 0) + 1


@dash.callback(Output(HISTORY, "data"), Output(UNDO, "disabled"), Output(UNDO, "children"), Input(ids.MASK, "data"), State(HISTORY, "data"))
def track_history(mask: dict | None, history: dict | None):
    """Each time another mask opens (a suggestion, a merge, an import, Clear), the one before goes on the undo list.
    Adding clicks changes the open mask in place and is not an undo step."""
    history = history or {"seen": None, "back": []}
    shown = {"id": mask["id"], "name": mask["name"]} if mask else None
    if (shown or {}).get("id") != (history["seen"] or {}).get("id"):
        history = {"seen": shown, "back": (history["back"] + [history["seen"]])[-UNDO_DEPTH:]}
    return history, *undo_button(history)


def undo_button(history: dict) -> tuple[bool, str]:
    if not history["back"]:
        return True, "Undo"
    previous = history["back"][-1]
    return False, f"Undo (back to {previous['name'] if previous else 'no mask'})"


@dash.callback(
    Output(ids.MASK, "data", allow_duplicate=True), Output(HISTORY, "data", allow_duplicate=True), Output(ids.SL_MESSAGE, "children", allow_duplicate=True),
    Input(UNDO, "n_clicks"), State(HISTORY, "data"),
    prevent_initial_call=True,
)
def undo(_n: int, history: dict | None):
    """Back to the mask open before the last change of mask, as the server holds it now."""
    if user_action() is None or not history or not history["back"]:
        return no_update, no_update, no_update
    previous, back = history["back"][-1], history["back"][:-1]
    try:
        restored = listed_mask(previous["id"]) if previous else None
    except ApiProblem as problem:
        return no_update, {"seen": history["seen"], "back": back}, problem_box(problem, f"go back to {previous['name']}")
    if previous and restored is None:
        return no_update, {"seen": history["seen"], "back": back}, problem_box(f"{previous['name']} is no longer on the server (deleted).")
    return restored, {"seen": previous, "back": back}, note(f"Back to {previous['name'] if previous else 'no mask'}.", "ok")


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
    "rules": Input(ids.SL_RULES, "value"), "mode": Input(MODE, "value"),
})
