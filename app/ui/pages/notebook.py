"""Lab notebook: every scan, intervention, mask and run this browser session made, newest first,
with its inputs and results; each reopens its view, copies as the CLI command or the Python call
that reproduces it, and the whole notebook exports as JSON or CSV."""

from __future__ import annotations

import time
from urllib.parse import urlencode

import dash
from dash import ALL, Input, Output, State, dcc, html, no_update

from app.ui import login, url_state
from app.ui.client import ApiProblem
from app.ui.components import api, note, problem_box, spinner, user_action

dash.register_page(__name__, path="/notebook", name="Notebook", order=8, title="Outlier Lab · Notebook")

ENTRIES = "nb-entries"
POLL = "nb-poll"
SEEN = "nb-seen"  # the ids last drawn (runs marked once final): the list is redrawn only when they change
EXPORT = "nb-export"  # pattern id {"type": EXPORT, "format": "json" | "csv"}
DOWNLOAD = "nb-download"
DELETE = "nb-delete"  # pattern id {"type": DELETE, "entry"}
MESSAGE = "nb-message"
POLL_MS = 3_000
KINDS = {"scan": "Scan", "intervene": "Intervention", "mask": "Mask", "run": "Run", "compare": "Comparison"}


def layout(**_query) -> html.Div:
    return html.Div([
        dcc.Interval(id=POLL, interval=POLL_MS),
        dcc.Store(id=SEEN),
        dcc.Download(id=DOWNLOAD),
        html.Div([
            html.Span("Everything this browser session computed, newest first.", className="hint"),
            html.Button("Export JSON", id={"type": EXPORT, "format": "json"}, className="button", n_clicks=0),
            html.Button("Export CSV", id={"type": EXPORT, "format": "csv"}, className="button", n_clicks=0),
        ], className="buttons"),
        spinner(html.Div(id=MESSAGE)),
        html.Div(id=ENTRIES),
    ])


def reopen_link(entry: dict) -> str | None:
    """The view that shows the entry again."""
    inputs = entry["inputs"]
    prompt = {"prompt": inputs.get("text"), "bos": "1" if inputs.get("prepend_bos", True) else "0"}
    if entry["kind"] == "scan":
        return "/?" + urlencode({**prompt, "site": inputs["site"], "rule": inputs["rule"]})
    if entry["kind"] == "intervene":
        stack = inputs["interventions"]
        query = {**prompt, "stack": url_state.encode_stack(stack), "layer": stack[0]["layer"], "eval": "prompt" if not inputs.get("eval_corpus") else inputs["eval_corpus"]}
        return "/layer?" + urlencode(query)
    if entry["kind"] == "mask":
        return "/selection?" + urlencode({"mask": inputs["mask_id"]})
    if entry["kind"] == "run":
        return "/finetune?" + urlencode({"job": inputs["job"], "mask": inputs["mask_id"]})
    return None


def code_block(label: str, code: str, block_id: str) -> html.Div:
    return html.Div([
        html.Div([html.Span(label, className="code-label"), dcc.Clipboard(target_id=block_id, title=f"copy the {label}", className="copy")], className="code-head"),
        html.Pre(code, id=block_id, className="code"),
    ], className="code-block")


def entry_card(entry: dict) -> html.Section:
    code, link = entry["code"], reopen_link(entry)
    when = time.strftime("%H:%M:%S", time.localtime(entry["created"]))
    blocks = [code_block("command", code["cli"], f"nb-cli-{entry['id']}")] if code["cli"] else []
    blocks.append(code_block("Python", code["python"], f"nb-python-{entry['id']}"))
    return html.Section([
        html.Div([
            html.Span(KINDS.get(entry["kind"], entry["kind"]), className=f"kind kind-{entry['kind']}"),
            html.Span(when, className="hint"),
            dcc.Link("reopen", href=link, className="explore-link") if link else None,
            html.Button("Delete", id={"type": DELETE, "entry": entry["id"]}, className="button danger small", n_clicks=0),
        ], className="entry-head"),
        html.Div(entry["title"], className="entry-title"),
        final_line(entry["results"].get("final")) if entry["kind"] == "run" else None,
        html.Details([html.Summary("inputs and results"), html.Pre(str({"inputs": entry["inputs"], "results": entry["results"]}), className="code")]),
        *blocks,
        note(code["note"]) if code.get("note") else None,
    ], className="card notebook-entry", id=f"nb-entry-{entry['id']}", **{"data-kind": entry["kind"]})


def final_line(final: dict | None) -> html.Div | None:
    """A run's end, once its job has ended: state, run id, and per method the last training loss and the held-out loss after."""
    if not final:
        return None
    said = [f"{final['state']} at step {final['step']} of {final['total']}"]
    if final.get("error"):
        said.append(final["error"])
    if final.get("run_id"):
        said.append(f"run {final['run_id']}")
        said.append(f"held-out loss before {format_loss(final['eval_before']['loss'])}")
        said.extend(f"{r['name']}: last training loss {format_loss(r['final_loss'])}, held-out after {format_loss(r['eval_after']['loss'])}" for r in final["runs"])
    return html.Div(" · ".join(said), className="entry-final")


def format_loss(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def seen_key(entries: list[dict]) -> list[str]:
    """What the list shows: its entries, and which runs have their final numbers (they arrive when the job ends)."""
    return [e["id"] + ("+final" if "final" in e["results"] else "") for e in entries]


@dash.callback(Output(ENTRIES, "children"), Output(SEEN, "data"), Input(POLL, "n_intervals"), State(SEEN, "data"))
def show_entries(_n, seen: list | None):
    session = login.notebook_session()
    if not session:
        return note("This browser keeps no notebook session yet: reload the page."), None
    try:
        entries = api().notebook(session)["entries"]
    except ApiProblem as problem:
        return problem_box(problem, "read the notebook"), None
    ids_now = seen_key(entries)
    if ids_now == seen:
        return no_update, no_update
    if not entries:
        return note("Nothing yet: scans, interventions, masks and runs land here as you make them."), ids_now
    return [entry_card(e) for e in entries], ids_now


@dash.callback(
    Output(DOWNLOAD, "data"), Output(MESSAGE, "children"), Output(SEEN, "data", allow_duplicate=True),
    Input({"type": EXPORT, "format": ALL}, "n_clicks"), Input({"type": DELETE, "entry": ALL}, "n_clicks"),
    prevent_initial_call=True,
)
def notebook_action(_exports: list[int], _deletes: list[int]):
    """Export the notebook, or delete one entry (the list is then read again)."""
    target, session = user_action(), login.notebook_session()
    if not isinstance(target, dict) or not session:
        return no_update, no_update, no_update
    try:
        if target["type"] == EXPORT:
            return dcc.send_bytes(api().notebook_export(session, target["format"]), f"notebook.{target['format']}"), None, no_update
        api().notebook_delete(session, target["entry"])
    except ApiProblem as problem:
        return no_update, problem_box(problem, "change the notebook"), no_update
    return no_update, None, None
