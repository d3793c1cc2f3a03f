"""Layout pieces every page shares, and the way a callback reaches the API client."""

from __future__ import annotations

import logging
from typing import Any, Iterable

import dash
import flask
from dash import Input, Output, State, ctx, dcc, html, no_update

from app.ui import ids, login, url_state
from app.ui.client import CLIENT_HEADER, ApiClient, ApiProblem
from app.ui.figures import graph_config
from app.ui.state import split_fitting

log = logging.getLogger(__name__)

CLIENT_ATTRIBUTE = "outlier_lab_client"
ASKS_FOR_KEY = "outlier_lab_asks_for_key"
MAX_TAB_ID = 64


def api() -> ApiClient:
    """The client of the app serving this callback (set by `create_app`); when the app asks its
    users for the API's key, it sends the key of the user whose callback this is. It names the
    browser tab the callback came from (assets/queue.js), for the API's queue."""
    app = dash.get_app()
    client = getattr(app, CLIENT_ATTRIBUTE)
    if getattr(app, ASKS_FOR_KEY, False):
        client = client.with_key(login.request_key())
    tab = flask.request.headers.get(CLIENT_HEADER) if flask.has_request_context() else None
    return client.with_client_id(tab[:MAX_TAB_ID]) if tab else client


def user_action() -> str | dict | None:
    """The id of the control the user touched to fire this callback, or None.

    When a page's components appear, Dash fires the callbacks whose outputs already exist
    (the shell's stores) with every input marked as triggered, buttons at n_clicks 0, even
    under prevent_initial_call. Such a call is no user action.
    """
    triggered = ctx.triggered
    if len(triggered) != 1:
        return None
    if triggered[0]["prop_id"].endswith(".n_clicks") and not triggered[0]["value"]:
        return None
    return ctx.triggered_id


def problem_box(problem: ApiProblem | str, what: str | None = None) -> html.Div:
    """A failure said in words: what could not be shown, and why."""
    message = problem.message if isinstance(problem, ApiProblem) else problem
    kind = problem.kind if isinstance(problem, ApiProblem) else "info"
    lead = f"Could not {what}: " if what else ""
    return html.Div([html.Strong(lead) if lead else None, message], className=f"message message-{kind}", role="alert")


def note(text: Any, kind: str = "info") -> html.Div:
    return html.Div(text, className=f"message message-{kind}")


WAITING = "Waiting for the API's model — see the status at the top right."


def card(title: str | None, *children: Any, class_name: str = "") -> html.Section:
    return html.Section(([html.H3(title)] if title else []) + list(children), className=f"card {class_name}".strip())


def spinner(*children: Any, id: str | None = None) -> dcc.Loading:
    """Shown over a view while its callback runs: long model calls never look frozen."""
    kwargs = {"id": id} if id else {}
    return dcc.Loading(list(children), type="default", delay_show=250, **kwargs)


def graph(graph_id: str | dict, figure: Any, name: str) -> dcc.Graph:
    """A figure whose modebar shares nothing and exports for a paper (assets/workbench.js adds SVG
    and 300 dpi PNG buttons to every modebar); `name` names the files."""
    return dcc.Graph(id=graph_id, figure=figure, config=graph_config(name))


def table(columns: list[str], rows: Iterable[Iterable[Any]], class_name: str = "", row_ids: list[str] | None = None) -> html.Table:
    body = []
    for i, row in enumerate(rows):
        attrs = {"className": row_ids[i]} if row_ids else {}
        body.append(html.Tr([html.Td(cell) for cell in row], **attrs))
    return html.Table([html.Thead(html.Tr([html.Th(c) for c in columns])), html.Tbody(body)], className=f"table {class_name}".strip())


def labelled(label: str, control: Any, hint: str | None = None, wide: bool = False) -> html.Div:
    children = [html.Label(label, className="field-label"), control] + ([html.Small(hint, className="hint")] if hint else [])
    return html.Div(children, className="field wide" if wide else "field")


def chosen_only(value: str) -> list[dict]:
    """A dropdown's options until the API's vocabulary arrives: the chosen value alone, since a
    dropdown drops a value its options lack."""
    return [{"label": value, "value": value}]


def layer_marks(n_layers: int) -> dict:
    step = 1 if n_layers <= 16 else 2 if n_layers <= 40 else max(1, n_layers // 16)
    return {i: str(i) for i in range(0, n_layers, step)}


DEFAULT_MASK_NAME = "my selection"


def add_to_mask(mask: dict | None, parts: list[dict] | None = None, dims: list[dict] | None = None) -> dict:
    """The current mask with more parts (a new mask when the tab has none), recorded in the
    notebook. Raises ApiProblem."""
    client = api()
    built = client.extend_mask(mask["id"], parts, dims) if mask else client.create_mask(DEFAULT_MASK_NAME, parts, dims)
    build = {"parts": parts or [], "dims": dims or [], "onto": mask["id"] if mask else None, "name": built["name"]}
    added = " and ".join(f"{len(items)} {what}" for items, what in ((parts or [], "part(s)"), (dims or [], "dim(s)")) if items)
    record_mask(f"added {added} by hand: {mask_line(built)}", {"build": build}, built)
    return built


def record_mask(title: str, inputs: dict, mask: dict) -> None:
    """A mask made in this tab, in the notebook: what made it, and its id, count and parts as the API answered."""
    record("mask", title, {"name": mask["model"]["name"], "device": None}, {**inputs, "mask_id": mask["id"]},
           {"count": mask["count"], "parts": len(mask["parts"])})


def listed_mask(mask_id: str) -> dict | None:
    """A server mask as the MASK store keeps it (its manifest without indices: a large mask stays
    small in the browser), or None when the server has none by that id. Raises ApiProblem."""
    return next((m for m in api().masks()["masks"] if m["id"] == mask_id), None)


def mask_line(mask: dict) -> str:
    """'my selection: 1,731 parameters (0.0013% of the model) in 5 parts'."""
    count, parts, share = mask["count"], len(mask["parts"]), mask["share"]
    percent = f"{share:.4%}" if share >= 1e-5 else f"{share * 100:.1e}%"
    return f"{mask['name']}: {count:,} parameter{'s' * (count != 1)} ({percent} of the model) in {parts} part{'s' * (parts != 1)}"


def fitting_stack(prompt: dict, model: dict, stack: list[dict]) -> list[dict]:
    """The interventions of the stack that fit the prompt and the model; the shell drops the others
    from the stack and says so. Raises ApiProblem."""
    n_tokens = len(api().tokenize(prompt["text"], prompt["prepend_bos"])["tokens"])
    return split_fitting(stack, n_tokens, model["n_layers"])[0]


def view_in_url(path: str, query_store: str, controls: dict[str, Input], drop: tuple[str, ...] = ()) -> None:
    """Keep a page's controls (query key -> its Input) in its URL and in the VIEWS store the nav links read.

    The URL is written in the browser; the page's `query_store` (a dcc.Store in its layout) hands
    the query on to VIEWS. A callback from page inputs straight to a shell store would run on the
    app's first load, before the page exists, and fail there. `drop`: older keys to remove.
    """
    dash.clientside_callback(url_state.view_writer(path, (*controls, *drop)), Output(query_store, "data"), *controls.values())

    @dash.callback(Output(ids.VIEWS, "data", allow_duplicate=True), Input(query_store, "data"), State(ids.VIEWS, "data"), prevent_initial_call=True)
    def remember_view(query: str | None, views: dict | None):
        views = views or {}
        if query is None or views.get(path) == query:
            return no_update
        return {**views, path: query}


def record(kind: str, title: str, model: dict | None, inputs: dict, results: dict) -> None:
    """Put what this callback computed in the browser session's lab notebook. A notebook that cannot
    be written never stops the view: the failure is logged."""
    session = login.notebook_session()
    if not session or not model:
        return
    try:
        api().notebook_add(session, kind, title, {"model": model["name"], "device": model.get("device"), **inputs}, results)
    except ApiProblem as problem:
        log.warning("the notebook did not take a %s entry: %s", kind, problem.message)
