"""The queue line on every page: what holds the model, where this tab's requests stand in line,
how far a long evaluation is, and a Cancel for this tab's own evaluation.

It polls GET /api/queue, which the API answers without waiting for the model. The API knows
this tab by the X-Client-Id its Dash requests carry (assets/queue.js), passed on by `api()`.
"""

from __future__ import annotations

import dash
from dash import Input, Output, State, dcc, html, no_update

from app.ui import ids
from app.ui.client import ApiProblem
from app.ui.components import api, user_action

QUEUE_EVERY_MS = 1_000
BUSY_AFTER_S = 1.0  # another tab's short request shows only once it has held the model this long


def layout() -> html.Div:
    return html.Div([
        dcc.Interval(id=ids.QUEUE_POLL, interval=QUEUE_EVERY_MS),
        dcc.Store(id=ids.QUEUE_WORK, storage_type="memory"),
        html.Span(id=ids.QUEUE_TEXT, className="queue-text"),
        html.Button("Cancel my evaluation", id=ids.QUEUE_CANCEL, className="button danger", n_clicks=0, hidden=True,
                    title="stop this tab's evaluation at its next window"),
    ], id=ids.QUEUE_BAR, className="queue-bar", hidden=True, role="status")


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def progress(work: dict) -> str:
    """"window 3 of 12" while window 3 is scored (or waits for its turn); "preparing" before the windows are known."""
    if work["total"] is None:
        return "preparing"
    if work["done"] >= work["total"]:
        return f"all {work['total']} {work['unit']}s done"
    return f"{work['unit']} {work['done'] + 1} of {work['total']}"


def bare(what: str) -> str:
    """"evaluation of ..." from "an evaluation of ...": the API names requests with their article."""
    for article in ("an ", "a "):
        if what.startswith(article):
            return what[len(article):]
    return what


def holder_phrase(holder: dict, works: dict[str, dict]) -> str:
    whose = "this tab" if holder["mine"] else "another tab"
    work = works.get(holder["work"] or "")
    return f"{holder['what']} from {whose}, {progress(work)}" if work else f"{holder['what']} from {whose} ({holder['seconds']:.0f} s so far)"


def queue_line(queue: dict | None) -> tuple[str | None, str | None]:
    """(the line, or None when there is nothing worth saying; the id of this tab's own evaluation that can be cancelled)."""
    if not queue:
        return None, None
    works = {w["id"]: w for w in queue["works"]}
    holder = queue["holder"]
    said = []
    if queue["position"] is not None:
        behind = f" behind {holder_phrase(holder, works)}" if holder else ""
        said.append(f"Waiting for the model: {ordinal(queue['position'])} in line{behind}.")
    mine = [w for w in queue["works"] if w["mine"]]
    for w in mine:
        state = "cancelling" if w["cancelled"] else progress(w)
        said.append(f"Your {bare(w['what'])}: {state} ({w['seconds']:.0f} s).")
    others = [w for w in queue["works"] if not w["mine"]]
    if queue["position"] is None and others:
        listed = "; ".join(f"{w['what']} from another tab, {progress(w)}" for w in others)
        said.append(f"The model is busy with {listed}; your requests go between its {others[0]['unit']}s.")
    elif queue["position"] is None and not mine and holder and not holder["mine"] and holder["seconds"] >= BUSY_AFTER_S:
        said.append(f"The model is busy: {holder_phrase(holder, works)}.")
    cancellable = next((w["id"] for w in mine if w["cancellable"] and not w["cancelled"]), None)
    return (" ".join(said) or None), cancellable


@dash.callback(
    Output(ids.QUEUE_BAR, "hidden"), Output(ids.QUEUE_TEXT, "children"), Output(ids.QUEUE_CANCEL, "hidden"), Output(ids.QUEUE_WORK, "data"),
    Input(ids.QUEUE_POLL, "n_intervals"), State(ids.HEALTH, "data"),
)
def poll_queue(_n: int | None, health: dict | None):
    if not (health or {}).get("ready"):
        return True, None, True, None  # the status and its banner say why nothing runs
    try:
        line, work = queue_line(api().queue())
    except ApiProblem:
        return True, None, True, None  # an API that does not answer shows in the status already
    return line is None, line, work is None, work


@dash.callback(Output(ids.QUEUE_TEXT, "children", allow_duplicate=True), Input(ids.QUEUE_CANCEL, "n_clicks"), State(ids.QUEUE_WORK, "data"), prevent_initial_call=True)
def cancel_work(_n: int, work: str | None):
    if user_action() is None or not work:
        return no_update
    try:
        api().cancel_work(work)
    except ApiProblem as problem:
        return f"Could not cancel: {problem.message}"
    return "Cancelling your evaluation at its next window…"
