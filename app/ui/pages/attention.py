"""Attention: one layer's pattern per head (or their mean), beside the same pattern under the
interventions stacked in the layer explorer, and the sink — how much every layer and head
attends to the first token — before and after those interventions."""

from __future__ import annotations

import dash
from dash import Input, Output, State, dcc, html, no_update

from app.ui import figures, ids, url_state
from app.ui.client import ApiProblem
from app.ui.components import (
    WAITING,
    api,
    graph,
    labelled,
    layer_marks,
    note,
    problem_box,
    spinner,
    view_in_url,
)
from app.ui.state import cached_scan, describe_intervention, effect_belongs

dash.register_page(__name__, path="/attention", name="Attention", order=2, title="Outlier Lab · Attention")

MEAN = "mean"
SEED = "at-seed"  # the layer the URL asks for, if any


def _head(raw: str) -> int | str:
    return MEAN if raw == MEAN else int(raw)


def head_options(n_heads: int) -> list[dict]:
    return [{"label": "mean of all heads", "value": MEAN}] + [{"label": f"head {h}", "value": h} for h in range(n_heads)]


def layout(**query) -> html.Div:
    layer, head = url_state.read(query, "layer", int, None), url_state.read(query, "head", _head, MEAN)
    return html.Div([
        dcc.Store(id=ids.AT_QUERY),
        dcc.Store(id=SEED, data={"layer": layer}),
        html.Div([
            labelled("Layer", dcc.Slider(id=ids.AT_LAYER, min=0, max=max(layer or 0, 1), step=1, value=layer or 0, marks=None, tooltip={"placement": "bottom"}), wide=True),
            labelled("Head", dcc.Dropdown(id=ids.AT_HEAD, options=head_options(0 if head == MEAN else head + 1), value=head, clearable=False)),
        ], className="controls layer-controls"),
        html.Div(id=ids.AT_MESSAGE),
        # a long prompt's pattern scrolls in a box of fixed height
        html.Div(spinner(graph(ids.AT_PATTERN, figures.empty_figure("Loading the pattern…"), "attention-pattern")), className="heatmap-pane"),
        spinner(html.Div([
            html.Div(graph(ids.AT_SINK, figures.empty_figure(""), "sink-per-layer"), className="half"),
            html.Div(graph(ids.AT_HEADS, figures.empty_figure(""), "sink-per-head"), className="half"),
        ], className="row")),
    ])


@dash.callback(
    Output(ids.AT_LAYER, "max"), Output(ids.AT_LAYER, "marks"), Output(ids.AT_LAYER, "value"), Output(ids.AT_HEAD, "options"),
    Input(ids.MODEL, "data"), State(ids.AT_LAYER, "value"), State(ids.SELECTED, "data"), State(SEED, "data"), State(ids.AT_LAYER, "marks"),
    State(ids.AT_LAYER, "max"),
)
def size_pickers(model: dict | None, layer: int, selected: dict | None, seed: dict | None = None, marks: dict | None = None, top: int | None = None):
    """The layer the URL asks for, else the selected coordinate's, else the middle one; once sized
    for a model, a new description of it (deltas switched) leaves the layer where the user put it."""
    if not model:
        return no_update, no_update, no_update, no_update
    n = model["n_layers"]
    heads = head_options(model["n_heads"])
    if marks and top == n - 1 and layer is not None:  # sized for this model already
        return no_update, no_update, no_update, heads
    asked = (seed or {}).get("layer")
    wanted = asked if asked is not None else selected["layer"] if selected else max(layer or 0, n // 2)
    return n - 1, layer_marks(n), min(wanted, n - 1), heads


def _share(x: float | None) -> str:
    return "—" if x is None else f"{x:.0%}"


def interventions_caption(stack: list[dict]) -> html.Div:
    """Which interventions the 'after' pattern runs with: the stack built in the layer explorer."""
    count = f"{len(stack)} intervention{'s' * (len(stack) != 1)}"
    return note([
        html.Strong("After: "), f"the same pattern with the {count} stacked in the layer explorer applied (reset them there to hide this).",
        html.Ul([html.Li(describe_intervention(item)) for item in stack], className="stack"),
    ])


def _patterns(prompt: dict, layer: int, heads: list[int] | None, mean: bool, stack: list[dict] | None) -> tuple[dict, html.Div | None]:
    """The pattern with the stack applied too, or without it (and why) when the API refuses the stack here:
    it may not fit this prompt (a position past its end), or doubling the pattern may exceed the payload."""
    client, refused = api(), None
    if stack:
        try:
            return client.attention(prompt["text"], prompt["prepend_bos"], layer, heads=heads, mean_heads=mean, interventions=stack), None
        except ApiProblem as problem:
            if problem.kind != "input":
                raise
            refused = problem_box(problem, "apply the stacked interventions to this pattern")
    return client.attention(prompt["text"], prompt["prepend_bos"], layer, heads=heads, mean_heads=mean), refused


@dash.callback(
    Output(ids.AT_PATTERN, "figure"), Output(ids.AT_MESSAGE, "children"),
    Input(ids.PROMPT, "data"), Input(ids.MODEL, "data"), Input(ids.AT_LAYER, "value"), Input(ids.AT_HEAD, "value"), Input(ids.INTERVENTIONS, "data"),
)
def show_pattern(prompt: dict, model: dict | None, layer: int, head, stack: list[dict] | None = None):
    if not model:
        return figures.empty_figure(WAITING), None
    if layer is None or layer >= model["n_layers"]:
        return no_update, no_update
    heads, mean = (None, True) if head == MEAN else ([int(head)], False)
    try:
        found, refused = _patterns(prompt, layer, heads, mean, stack)
    except ApiProblem as problem:
        return figures.empty_figure("No pattern: see the message above."), problem_box(problem, f"read the attention of layer {layer}")
    figure = pattern_figure(found, layer, "mean of all heads" if mean else f"head {head}")
    return figure, refused if found.get("patterns_after") is None else interventions_caption(stack)


def pattern_figure(found: dict, layer: int, which: str):
    """The pattern, or the pattern before beside the pattern after when the answer has one."""
    before, positions = _share(found["sink_share"][0]), found.get("positions")
    pooled = f" (pooled into {len(positions)} blocks of positions)" if positions and len(positions) < len(found["tokens"]) else ""
    if found.get("patterns_after") is None:
        return figures.attention_heatmap(found["tokens"], found["patterns"][0], f"Layer {layer}, {which}: {before} of attention on position 0{pooled}", positions)
    title = f"Layer {layer}, {which}: {before} → {_share(found['sink_share_after'][0])} of attention on position 0{pooled}"
    return figures.attention_before_after(found["tokens"], found["patterns"][0], found["patterns_after"][0], title, positions)


@dash.callback(
    Output(ids.AT_SINK, "figure"), Output(ids.AT_HEADS, "figure"),
    Input(ids.PROMPT, "data"), Input(ids.MODEL, "data"), Input(ids.EFFECT, "data"), State(ids.SCAN, "data"), State(ids.INTERVENTIONS, "data"),
)
def show_sinks(prompt: dict, model: dict | None, effect: dict | None, cached: dict | None, stack: list | None):
    if not model:
        return figures.empty_figure(""), figures.empty_figure("")
    try:
        scan = cached_scan(cached, prompt, model) or api().scan(prompt["text"], prompt["prepend_bos"])  # the sink does not depend on the site or rule
    except ApiProblem as problem:
        return figures.empty_figure(problem.message), figures.empty_figure("")
    after = [e["sink_share_after"] for e in effect["result"]["layers"]] if effect_belongs(effect, prompt, stack, model) else None
    title = "Sink share per layer" + (" — before and after the interventions" if after else "")
    return figures.sink_curve(scan["sink_share"], after, title), figures.head_sink_heatmap(scan["head_sink_share"])


view_in_url("/attention", ids.AT_QUERY, {"layer": Input(ids.AT_LAYER, "value"), "head": Input(ids.AT_HEAD, "value")})
