"""Compare: two sides of one question side by side — the prompt with BOS and without, the prompt
and another one, or the base model and the model with a fine-tune run's deltas on — as paired
curves, a per-layer difference, the heatmaps of one layer and their difference."""

from __future__ import annotations

import dash
from dash import Input, Output, State, dcc, html, no_update

from app.ui import figures, ids, url_state
from app.ui.client import ApiClient, ApiProblem
from app.ui.components import (
    WAITING,
    api,
    card,
    graph,
    labelled,
    note,
    problem_box,
    record,
    spinner,
    user_action,
    view_in_url,
)

dash.register_page(__name__, path="/compare", name="Compare", order=6, title="Outlier Lab · Compare")

MODES = {"bos": "the prompt with BOS and without", "prompts": "the prompt and another prompt", "deltas": "the base model and the applied run's deltas"}
QUERY = "cp-query"
MODE = "cp-mode"
OTHER = "cp-other"
OTHER_BOS = "cp-other-bos"
LAYER = "cp-layer"
RUN = "cp-run"
MESSAGE = "cp-message"
CURVES, SINKS, DIFFERENCE = "cp-curves", "cp-sinks", "cp-difference"
HEAT_A, HEAT_B, HEAT_DIFF = "cp-heat-a", "cp-heat-b", "cp-heat-diff"


def layout(**query) -> html.Div:
    mode = query.get("mode") if query.get("mode") in MODES else "bos"
    return html.Div([
        dcc.Store(id=QUERY),
        html.Div([
            labelled("Compare", dcc.RadioItems(id=MODE, options=[{"label": v, "value": k} for k, v in MODES.items()], value=mode)),
            labelled("Heatmap layer", dcc.Input(id=LAYER, type="number", min=0, step=1, value=url_state.read(query, "layer", int, 0))),
        ], className="controls"),
        labelled("The other prompt", dcc.Textarea(id=OTHER, value=query.get("other", ""), className="prompt-text", rows=2), "for “another prompt”"),
        dcc.Checklist(id=OTHER_BOS, options=[{"label": " prepend BOS to the other prompt", "value": "bos"}], value=url_state.listed(query, "other_bos", ["bos"])),
        html.Div([html.Button("Compare", id=RUN, className="button primary", n_clicks=0)], className="buttons"),
        spinner(html.Div(id=MESSAGE)),
        graph(CURVES, figures.empty_figure("Press Compare."), "compare-curves"),
        html.Div([
            html.Div(graph(SINKS, figures.empty_figure(""), "compare-sink-share"), className="half"),
            html.Div(graph(DIFFERENCE, figures.empty_figure(""), "compare-difference"), className="half"),
        ], className="row"),
        html.Div([
            html.Div(html.Div(graph(HEAT_A, figures.empty_figure(""), "compare-heatmap-a"), className="heatmap-pane"), className="half"),
            html.Div(html.Div(graph(HEAT_B, figures.empty_figure(""), "compare-heatmap-b"), className="heatmap-pane"), className="half"),
        ], className="row"),
        card("Difference of the heatmaps", html.Div(graph(HEAT_DIFF, figures.empty_figure(""), "compare-heatmap-difference"), className="heatmap-pane")),
    ])


def sides(mode: str, prompt: dict, other: str | None, other_bos: bool) -> list[tuple[str, str, bool]]:
    """(label, text, prepend_bos) of side A and side B."""
    if mode == "bos":
        return [("BOS on", prompt["text"], True), ("BOS off", prompt["text"], False)]
    if mode == "prompts":
        return [("prompt A", prompt["text"], prompt["prepend_bos"]), ("prompt B", other or "", other_bos)]
    return [("base", prompt["text"], prompt["prepend_bos"]), ("base + deltas", prompt["text"], prompt["prepend_bos"])]


def measured(client: ApiClient, text: str, bos: bool, layer: int) -> tuple[dict, dict]:
    """(scan, pooled heatmap of `layer`) of one side. Raises ApiProblem."""
    return client.scan(text, bos, rule="relative"), client.activations(text, bos, layer, view="block")


def both_sides(client: ApiClient, mode: str, pairs: list[tuple[str, str, bool]], layer: int, deltas: dict | None) -> list[tuple[dict, dict]]:
    """Each side measured; for the deltas, switched off for the base and on for the other, then left as they were. Raises ApiProblem."""
    if mode != "deltas":
        return [measured(client, text, bos, layer) for _, text, bos in pairs]
    try:
        found = []
        for enabled, (_, text, bos) in zip((False, True), pairs):
            client.switch_deltas(enabled)
            found.append(measured(client, text, bos, layer))
        return found
    finally:
        client.switch_deltas(deltas["enabled"])


@dash.callback(
    Output(CURVES, "figure"), Output(SINKS, "figure"), Output(DIFFERENCE, "figure"), Output(HEAT_A, "figure"), Output(HEAT_B, "figure"), Output(HEAT_DIFF, "figure"),
    Output(MESSAGE, "children"),
    Input(RUN, "n_clicks"),
    State(MODE, "value"), State(OTHER, "value"), State(OTHER_BOS, "value"), State(LAYER, "value"), State(ids.PROMPT, "data"), State(ids.MODEL, "data"),
    running=[(Output(RUN, "disabled"), True, False)],
    prevent_initial_call=True,
)
def compare(_n: int, mode: str, other: str | None, other_bos: list[str], layer: int | None, prompt: dict, model: dict | None):
    unchanged = (no_update,) * 6
    if user_action() is None:
        return *unchanged, no_update
    refusal = compare_refusal(mode, other, layer, model)
    if refusal:
        return *unchanged, problem_box(refusal)
    pairs = sides(mode, prompt, other, "bos" in (other_bos or []))
    labels = (pairs[0][0], pairs[1][0])
    try:
        (scan_a, heat_a), (scan_b, heat_b) = both_sides(api(), mode, pairs, int(layer), model.get("deltas"))
    except ApiProblem as problem:
        return *unchanged, problem_box(problem, "compare")
    record("compare", f"compare {labels[0]} and {labels[1]}", model, {"mode": mode, "sides": [list(p) for p in pairs], "layer": int(layer)},
           {"max_abs_a": [(e["top"] or [{"value": 0}])[0]["value"] for e in scan_a["layers"]], "max_abs_b": [(e["top"] or [{"value": 0}])[0]["value"] for e in scan_b["layers"]]})
    return (figures.compare_curves(scan_a, scan_b, labels), figures.compare_sinks(scan_a, scan_b, labels), figures.compare_difference(scan_a, scan_b, labels),
            figures.activation_heatmap(heat_a), figures.activation_heatmap(heat_b), figures.difference_heatmap(heat_a, heat_b, labels), alignment_note(mode, heat_a, heat_b))


def compare_refusal(mode: str, other: str | None, layer: int | None, model: dict | None) -> str | None:
    if not model:
        return WAITING
    if layer is None or not 0 <= layer < model["n_layers"]:
        return f"heatmap layer: give a layer from 0 to {model['n_layers'] - 1}"
    if mode == "prompts" and not (other or "").strip():
        return "the other prompt: type one"
    if mode == "deltas" and not (model.get("deltas") and not model["deltas"]["merged"]):
        return "No run's deltas are applied (or they are merged): apply a run on the Fine-tune page first."
    return None


def alignment_note(mode: str, heat_a: dict, heat_b: dict) -> html.Div:
    """What the difference heatmap lines up: positions counted from the end of each prompt."""
    if mode == "bos":
        return note("The difference lines the prompts up token by token: BOS off has no position 0, so its position p sits beside BOS on's p + 1.")
    if len(heat_a["tokens"]) != len(heat_b["tokens"]) or heat_a["tokens"][-1] != heat_b["tokens"][-1]:
        return note("The prompts differ: the difference heatmap lines up their last positions, which hold different tokens.")
    return note("Both sides have the same tokens: the difference is position by position.")


view_in_url("/compare", QUERY, {
    "mode": Input(MODE, "value"), "layer": Input(LAYER, "value"), "other": Input(OTHER, "value"), "other_bos": Input(OTHER_BOS, "value"),
})
