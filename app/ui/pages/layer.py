"""Layer explorer: one layer's position × dim heatmap; click a cell, then zero, mean-replace,
scale or set it and watch perplexity, the next token, later layers and the sink respond."""

from __future__ import annotations

import dash
from dash import ALL, Input, Output, State, ctx, dcc, html, no_update

from app.ui import figures, ids, url_state
from app.ui.client import ApiClient, ApiProblem
from app.ui.components import (
    WAITING,
    add_to_mask,
    api,
    card,
    chosen_only,
    fitting_stack,
    graph,
    labelled,
    layer_marks,
    mask_line,
    note,
    problem_box,
    record,
    spinner,
    table,
    user_action,
    view_in_url,
)
from app.ui.state import (
    DEFAULT_SITE,
    coordinate_from_click,
    describe_intervention,
    effect_belongs,
    effect_is_current,
    effect_record,
    format_perplexity,
    format_value,
    intervention_for,
    model_key,
    options,
    perplexity_change,
    prompt_key,
    stack_intervention,
    token_label,
    top_dims_per_token,
)

dash.register_page(__name__, path="/layer", name="Layer explorer", order=1, title="Outlier Lab · Layer explorer")

SEED = "lx-seed"  # the coordinate a link asked for (/layer?layer=11&position=0&dim=507)
MATRIX = "lx-matrix"  # the heatmap's data, to map a click back to a coordinate
FRESH_EFFECT = "lx-fresh-effect"  # results evaluated again after a change elsewhere, on their way to the shell's EFFECT store
REFRESH_MESSAGE = "lx-refresh-message"  # why they could not be
VIEWS = {"top": "largest dims", "block": "all dims, pooled"}
EVAL_SOURCES = {"prompt": "the prompt", "prose": "bundled prose"}
DROP = "lx-drop"  # pattern id {"type": DROP, "index": i}: the button removing one item of the stack
MODE_BUTTONS = {ids.LX_ZERO: "zero", ids.LX_MEAN: "mean", ids.LX_SCALE: "scale", ids.LX_SET: "set"}


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def layout(layer: str | None = None, position: str | None = None, dim: str | None = None, site: str | None = None, **query) -> html.Div:
    """`/layer?layer=11&position=0&dim=507` opens a coordinate; `sel=11:resid_post:0:507` is the selection the page wrote."""
    seed = {"layer": _int(layer), "position": _int(position), "dim": _int(dim), "site": site or DEFAULT_SITE}  # the API refuses an unknown site, in words
    seed["selected"] = url_state.decode_coordinate(query.get("sel"))
    view = query.get("view") if query.get("view") in VIEWS else "top"
    eval_source = query.get("eval") if query.get("eval") in EVAL_SOURCES else "prompt"
    return html.Div([
        dcc.Store(id=ids.LX_QUERY),
        dcc.Store(id=SEED, data=seed),
        dcc.Store(id=MATRIX),
        dcc.Store(id=FRESH_EFFECT),
        html.Div([
            labelled("Layer", dcc.Slider(id=ids.LX_LAYER, min=0, max=max(seed["layer"] or 0, 1), step=1, value=seed["layer"] or 0, marks=None, tooltip={"placement": "bottom"}), wide=True),
            labelled("Site", dcc.Dropdown(id=ids.LX_SITE, options=chosen_only(seed["site"]), value=seed["site"], clearable=False)),
            labelled("Columns", dcc.RadioItems(id=ids.LX_VIEW, options=[{"label": v, "value": k} for k, v in VIEWS.items()], value=view)),
        ], className="controls layer-controls"),
        html.Div(id=ids.LX_MESSAGE),
        # The heatmap scrolls in a box of fixed height, whatever the prompt's length; the buttons and
        # the numbers they produce sit beside it, side by side, never thousands of pixels down.
        html.Div([
            html.Div(spinner(graph(ids.LX_HEATMAP, figures.empty_figure("Loading the layer…"), "layer-heatmap")), className="heatmap-pane", id="lx-heatmap-pane"),
            card("Selected coordinate", html.Div(id=ids.LX_SELECTED, className="selected-coordinate"),
                 html.Div([
                     html.Button("Zero", id=ids.LX_ZERO, className="button", n_clicks=0),
                     html.Button("Mean-replace", id=ids.LX_MEAN, className="button", n_clicks=0),
                     html.Button("Scale", id=ids.LX_SCALE, className="button", n_clicks=0),
                     html.Button("Set", id=ids.LX_SET, className="button", n_clicks=0),
                     dcc.Input(id=ids.LX_VALUE, type="number", value=url_state.read(query, "value", float, 0.5), debounce=True, className="value-input"),
                     html.Button("Reset", id=ids.LX_RESET, className="button danger", n_clicks=0),
                 ], className="buttons"),
                 labelled("Perplexity on", dcc.RadioItems(id=ids.LX_EVAL, options=[{"label": v, "value": k} for k, v in EVAL_SOURCES.items()], value=eval_source, inline=True)),
                 html.Div(id=ids.LX_STACK),
                 spinner(
                     html.Div(id=ids.LX_INTERVENE_MESSAGE),
                     html.Div(id=REFRESH_MESSAGE),
                     html.Div(id=ids.LX_PPL),
                     html.Div(id=ids.LX_PREDICTIONS),
                 ),
                 html.Div([html.Button("Add this dim's weights to the selection", id=ids.LX_ADD_MASK, className="button", n_clicks=0)], className="buttons"),
                 spinner(html.Div(id=ids.LX_MASK_MESSAGE)),
                 class_name="side-pane"),
        ], className="workbench-split"),
        html.Div([
            html.Div(graph(ids.LX_EFFECT_CURVE, figures.empty_figure("Intervene to compare layers before and after."), "largest-activation-before-after"), className="half"),
            html.Div(graph(ids.LX_EFFECT_SINK, figures.empty_figure(""), "sink-before-after"), className="half"),
        ], className="row"),
        card("Top dims per token", html.Div(id=ids.LX_TOPDIMS, className="table-scroll")),
    ])


@dash.callback(
    Output(ids.LX_LAYER, "max"), Output(ids.LX_LAYER, "marks"), Output(ids.LX_LAYER, "value"),
    Input(ids.MODEL, "data"), State(ids.LX_LAYER, "value"), State(SEED, "data"), State(ids.SELECTED, "data"), State(ids.LX_LAYER, "max"), State(ids.LX_LAYER, "marks"),
)
def size_slider(model: dict | None, layer: int, seed: dict, selected: dict | None, top: int | None = None, marks: dict | None = None):
    """Once the model is known: the layer a link or the selection asks for. Later descriptions of the
    same model (its deltas switched) leave the layer the user moved to."""
    if not model:
        return no_update, no_update, no_update
    n = model["n_layers"]
    if marks and top == n - 1 and layer is not None:  # sized for this model already
        return no_update, no_update, no_update
    wanted = seed["layer"] if seed["layer"] is not None else selected["layer"] if selected else layer
    return n - 1, layer_marks(n), min(max(wanted or 0, 0), n - 1)


@dash.callback(Output(ids.LX_SITE, "options"), Input(ids.VOCAB, "data"))
def offer_sites(vocab: dict | None):
    return options(vocab["sites"]) if vocab else no_update


@dash.callback(
    Output(ids.LX_HEATMAP, "figure"), Output(MATRIX, "data"), Output(ids.LX_TOPDIMS, "children"), Output(ids.LX_MESSAGE, "children"),
    Input(ids.PROMPT, "data"), Input(ids.MODEL, "data"), Input(ids.LX_LAYER, "value"), Input(ids.LX_SITE, "value"), Input(ids.LX_VIEW, "value"),
    Input(ids.SELECTED, "data"),
    State(MATRIX, "data"),
)
def show_layer(prompt: dict, model: dict | None, layer: int, site: str, view: str, selected: dict | None, cached: dict | None):
    if not model:
        return figures.empty_figure(WAITING), None, None, None
    if layer is None or layer >= model["n_layers"]:
        return no_update, no_update, no_update, no_update
    key = [*prompt_key(prompt), model_key(model), layer, site, view]
    try:
        matrix, fresh = layer_matrix(key, cached, prompt, layer, site, view)
    except ApiProblem as problem:
        return figures.empty_figure("No heatmap: see the message above."), None, None, problem_box(problem, f"read layer {layer}")
    return figures.activation_heatmap(matrix, selected), fresh, top_dims_table(matrix), pooled_hint(matrix)


def layer_matrix(key: list, cached: dict | None, prompt: dict, layer: int, site: str, view: str) -> tuple[dict, dict]:
    """The heatmap's data and what to store of it: the cached one when only the selection moved
    (redraw the marker, skip the forward pass), else the API's with its key. Raises ApiProblem."""
    if cached and cached.get("key") == key:
        return cached["matrix"], no_update
    matrix = api().activations(prompt["text"], prompt["prepend_bos"], layer, site=site, view=view)
    return matrix, {"key": key, "matrix": matrix}


def top_dims_table(matrix: dict) -> html.Table:
    rows = [[token_label(r["position"], r["token"]), ", ".join(f"{t['dim']}: {format_value(t['value'])}" for t in r["top"])] for r in top_dims_per_token(matrix)]
    return table(["token", "largest dims shown (dim: x)"], rows)


def pooled_hint(matrix: dict) -> html.Div | None:
    if matrix["block_size"] == 1:
        return None
    return note("Each column pools a block of dims: switch to “largest dims” to pick a coordinate by clicking.")


@dash.callback(
    Output(ids.SELECTED, "data"),
    Input(ids.LX_HEATMAP, "clickData"), Input(SEED, "data"),
    State(MATRIX, "data"), State(ids.LX_LAYER, "value"), State(ids.LX_SITE, "value"),
    prevent_initial_call=True,  # page inputs, a shell output: it runs once the page is there
)
def select_coordinate(click: dict | None, seed: dict, matrix: dict | None, layer: int, site: str):
    if ctx.triggered_id == SEED:
        if seed.get("selected"):
            return seed["selected"]
        if seed["layer"] is None or seed["position"] is None or seed["dim"] is None:
            return no_update
        return {"layer": seed["layer"], "site": seed["site"], "position": seed["position"], "dim": seed["dim"], "token": None, "value": None}
    if not matrix:
        return no_update
    found = coordinate_from_click(click, matrix["matrix"], layer, site)
    return found or no_update


# SEED is an input below only because it is part of the page: when the page appears, Dash drops
# the first call of a callback whose inputs are all outputs of callbacks that returned no_update.
@dash.callback(Output(ids.LX_SELECTED, "children"), Input(ids.SELECTED, "data"), Input(SEED, "data"))
def show_selected(selected: dict | None, _seed: dict):
    if not selected:
        return "Click a cell of the heatmap to pick a coordinate."
    token = f" {selected['token']!r}" if selected.get("token") is not None else ""
    value = f" = {format_value(selected['value'])}" if selected.get("value") is not None else ""
    return f"layer {selected['layer']} · {selected['site']} · position {selected['position']}{token} · dim {selected['dim']}{value}"


@dash.callback(
    Output(ids.INTERVENTIONS, "data"), Output(ids.EFFECT, "data"), Output(ids.LX_INTERVENE_MESSAGE, "children"),
    Input(ids.LX_ZERO, "n_clicks"), Input(ids.LX_MEAN, "n_clicks"), Input(ids.LX_SCALE, "n_clicks"), Input(ids.LX_SET, "n_clicks"), Input(ids.LX_RESET, "n_clicks"),
    Input(ids.LX_EVAL, "value"),
    State(ids.SELECTED, "data"), State(ids.LX_VALUE, "value"), State(ids.INTERVENTIONS, "data"), State(ids.PROMPT, "data"), State(ids.EFFECT, "data"),
    State(ids.MODEL, "data"),
    prevent_initial_call=True,
)
def intervene(_z, _m, _s, _t, _r, eval_source: str, selected: dict | None, value: float | None, stack: list[dict] | None, prompt: dict, effect: dict | None,
              model: dict | None = None):
    trigger = user_action()
    if trigger is None:
        return no_update, no_update, no_update
    if trigger == ids.LX_RESET:
        return [], None, None
    stack, refusal = stacked(trigger, selected, value, list(stack or []))
    if refusal or not stack:  # nothing to evaluate: a refused press, or a new evaluation source before any intervention
        return no_update, no_update, refusal
    try:
        result = evaluate(api(), prompt, stack, eval_source)
    except ApiProblem as problem:
        return no_update, no_update, problem_box(problem, "run the intervention")
    record_effect(prompt, model, stack, eval_source, result)
    return stack, effect_record(prompt, model, stack, eval_source, result), None


def record_effect(prompt: dict, model: dict | None, stack: list[dict], eval_source: str, result: dict) -> None:
    """The intervention in the lab notebook, with the three perplexities it produced."""
    ppl = {key: result[key]["perplexity"] for key in ("baseline", "intervened", "control")}
    title = f"{'; '.join(describe_intervention(item) for item in stack)} · perplexity {format_perplexity(ppl['baseline'])} → {format_perplexity(ppl['intervened'])}"
    inputs = {"text": prompt["text"], "prepend_bos": prompt["prepend_bos"], "interventions": stack, "eval_corpus": None if eval_source == "prompt" else eval_source}
    record("intervene", title, model, inputs, {**ppl, "n_tokens": result["baseline"]["n_tokens"]})


def evaluate(client: ApiClient, prompt: dict, stack: list[dict], eval_source: str) -> dict:
    return client.intervene(prompt["text"], prompt["prepend_bos"], stack, eval_corpus=None if eval_source == "prompt" else eval_source)


@dash.callback(
    Output(FRESH_EFFECT, "data"), Output(REFRESH_MESSAGE, "children"),
    Input(ids.PROMPT, "data"), Input(ids.MODEL, "data"), Input(ids.INTERVENTIONS, "data"), Input(SEED, "data"),
    State(ids.LX_EVAL, "value"), State(ids.EFFECT, "data"),
)
def refresh_effect(prompt: dict, model: dict | None, stack: list[dict] | None, _seed: dict, eval_source: str, effect: dict | None):
    """Results always belong to the prompt and model shown: after a change of either, or of the stack
    from elsewhere, what still fits is evaluated again. A reload finds its results current and calls nothing.
    (Results that no longer belong are not shown: `show_effect` checks.)"""
    if not model or not stack:
        return no_update, None
    try:
        fits = fitting_stack(prompt, model, stack)
        if not fits or effect_is_current(effect, prompt, model, fits, eval_source):
            return no_update, None
        result = evaluate(api(), prompt, fits, eval_source)
    except ApiProblem as problem:
        return no_update, problem_box(problem, "run the interventions on this prompt")
    record_effect(prompt, model, fits, eval_source, result)
    return effect_record(prompt, model, fits, eval_source, result), None


# The page's own store, then the shell's: a callback from shell inputs to a shell store that also
# listens to the page would fire while another page is shown, and fail there.
@dash.callback(Output(ids.EFFECT, "data", allow_duplicate=True), Input(FRESH_EFFECT, "data"), prevent_initial_call=True)
def keep_effect(fresh: dict | None):
    return fresh or no_update


@dash.callback(
    Output(ids.INTERVENTIONS, "data", allow_duplicate=True),
    Input({"type": DROP, "index": ALL}, "n_clicks"), State(ids.INTERVENTIONS, "data"),
    prevent_initial_call=True,
)
def drop_intervention(_clicks: list[int], stack: list[dict] | None):
    """One item off the stack; the rest is evaluated again."""
    target = user_action()
    if not isinstance(target, dict) or not stack or target["index"] >= len(stack):
        return no_update
    return stack[:target["index"]] + stack[target["index"] + 1:]


def stacked(trigger: str, selected: dict | None, value: float | None, stack: list[dict]) -> tuple[list[dict], html.Div | None]:
    """The stack after a press (the same for a new evaluation source), or why the press adds nothing."""
    if trigger not in MODE_BUTTONS:
        return stack, None
    mode = MODE_BUTTONS[trigger]
    if not selected:
        return stack, problem_box("Click a heatmap cell first.")
    if mode in ("scale", "set") and value is None:
        return stack, problem_box(f"{mode.capitalize()} needs a number in the box beside the buttons.")
    return stack_intervention(stack, intervention_for(selected, mode, value)), None


def _number(label: str, loss: dict, sub: str, css: str = "") -> html.Div:
    return html.Div([html.Div(label, className="label"), html.Div(format_perplexity(loss["perplexity"]), className="value"), html.Div(sub, className="sub")],
                    className=f"number {css}".strip())


def predictions_table(result: dict) -> html.Div:
    before, after = result["top_k"]["before"], result["top_k"]["after"]
    rows = [[repr(b["token"]), f"{b['prob']:.1%}", repr(a["token"]), f"{a['prob']:.1%}"] for b, a in zip(before, after)]
    return html.Div([html.H4("Next token after the prompt"), table(["before", "p", "after", "p"], rows)], className="predictions")


@dash.callback(
    Output(ids.LX_PPL, "children"), Output(ids.LX_EFFECT_CURVE, "figure"), Output(ids.LX_EFFECT_SINK, "figure"), Output(ids.LX_PREDICTIONS, "children"), Output(ids.LX_STACK, "children"),
    Input(ids.EFFECT, "data"), Input(ids.INTERVENTIONS, "data"), Input(SEED, "data"), Input(ids.PROMPT, "data"), Input(ids.MODEL, "data"),
)
def show_effect(effect: dict | None, stack: list[dict] | None, _seed: dict, prompt: dict, model: dict | None = None):
    """Results only next to the prompt, stack and model they were computed from."""
    listed = stack_view(stack)
    if not effect_belongs(effect, prompt, stack, model):
        return None, figures.empty_figure("Intervene to compare layers before and after."), figures.empty_figure(""), None, listed
    result = effect["result"]
    return effect_numbers(result), figures.effect_curve(result["layers"]), sink_effect(result), predictions_table(result), listed


def stack_view(stack: list[dict] | None) -> html.Ul | html.Div:
    if not stack:
        return note("No interventions yet: pick a cell, then press a button.")
    return html.Ul([
        html.Li([describe_intervention(item), html.Button("×", id={"type": DROP, "index": i}, className="drop", n_clicks=0, title="remove this intervention")])
        for i, item in enumerate(stack)
    ], className="stack")


def effect_numbers(result: dict) -> html.Div:
    """Perplexity before, after, and after the random control."""
    controls = ", ".join(describe_intervention(c) for c in result["control_interventions"])
    return html.Div([
        _number("baseline perplexity", result["baseline"], f"on {result['eval_source']}, {result['baseline']['n_tokens']} tokens"),
        _number("intervened", result["intervened"], perplexity_change(result["baseline"]["perplexity"], result["intervened"]["perplexity"]), "intervened"),
        _number("random control", result["control"], controls),
    ], className="numbers", id="lx-numbers")


def sink_effect(result: dict):
    before, after = [e["sink_share_before"] for e in result["layers"]], [e["sink_share_after"] for e in result["layers"]]
    return figures.sink_curve(before, after, "Sink share per layer, before and after")


def residual_width(site: str) -> bool:
    """Whether the site's dims are the residual stream's, the dims a norm entry and projection slices belong to. Raises ApiProblem."""
    return api().vocab()["sites"].get(site, {}).get("width") == "d_model"


@dash.callback(
    Output(ids.MASK, "data", allow_duplicate=True), Output(ids.LX_MASK_MESSAGE, "children"),
    Input(ids.LX_ADD_MASK, "n_clicks"), State(ids.SELECTED, "data"), State(ids.MASK, "data"),
    prevent_initial_call=True,
)
def add_dim_to_mask(_n: int, selected: dict | None, mask: dict | None):
    if user_action() is None:
        return no_update, no_update
    if not selected:
        return no_update, problem_box("Click a heatmap cell first.")
    try:
        if not residual_width(selected["site"]):
            return no_update, problem_box(f"{selected['site']} dims are not residual dims; pick a cell on a residual-width site such as resid_post.")
        mask = add_to_mask(mask, dims=[{"layer": selected["layer"], "dim": selected["dim"]}])
    except ApiProblem as problem:
        return no_update, problem_box(problem, "add to the selection")
    done = f"Added the norm entry, the reading columns and the writing rows of dim {selected['dim']} in layer {selected['layer']}. Now {mask_line(mask)}."
    return mask, note(done, "ok")


view_in_url("/layer", ids.LX_QUERY, {
    "layer": Input(ids.LX_LAYER, "value"), "site": Input(ids.LX_SITE, "value"), "view": Input(ids.LX_VIEW, "value"), "eval": Input(ids.LX_EVAL, "value"),
    "value": Input(ids.LX_VALUE, "value"), "sel": Input(ids.SELECTED, "data"),
}, drop=("position", "dim"))
