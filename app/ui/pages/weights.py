"""Weights: the norm scales of a layer as histograms (the bimodal plots) with the rule's
outliers and the massive-activation dims marked; norm scales at those dims across layers;
and a projection matrix's entries and outlier rows and columns."""

from __future__ import annotations

import dash
from dash import ALL, Input, Output, State, ctx, dcc, html, no_update

from app.ui import figures, ids
from app.ui.client import ApiProblem
from app.ui.components import (
    WAITING,
    add_to_mask,
    api,
    card,
    labelled,
    layer_marks,
    mask_line,
    note,
    problem_box,
    spinner,
    table,
    user_action,
)
from app.ui.state import model_key, prompt_key

dash.register_page(__name__, path="/weights", name="Weights", order=3, title="Outlier Lab · Weights")

SUMMARY = "wt-summary"  # {"weights": norm statistics, "dims": massive dims, "at_dims": norms at those dims}
NORM_HIST = "wt-norm-hist"  # pattern-matched: one histogram per norm of the layer
RULES = {"sigma": "σ from the mean", "percentile": "percentile", "mad": "median / MAD"}
DEFAULT_K = {"sigma": 3.0, "percentile": 99.0, "mad": 3.0}
MAX_OVERVIEW_DIMS = 40


def layout(**_query) -> html.Div:
    return html.Div([
        dcc.Store(id=SUMMARY),
        html.Div([
            labelled("Outlier rule", dcc.RadioItems(id=ids.WT_RULE, options=[{"label": v, "value": k} for k, v in RULES.items()], value="sigma", inline=True)),
            labelled("k", dcc.Input(id=ids.WT_K, type="number", value=3.0, min=0, step="any", debounce=True), "σ multiples; percentile: 50 < k < 100"),
            labelled("Layer", dcc.Slider(id=ids.WT_LAYER, min=0, max=1, step=1, value=0, marks=None, tooltip={"placement": "bottom"}), wide=True),
        ], className="controls layer-controls"),
        html.Div(id=ids.WT_MESSAGE),
        spinner(html.Div(id=ids.WT_HISTOGRAM, className="row")),
        dcc.Store(id=ids.WT_LISTED),
        spinner(html.Div(id=ids.WT_MASK_MESSAGE)),
        card("Listed outlier entries of this layer's norms",
             html.Div(id=ids.WT_OUTLIERS, className="table-scroll"),
             html.Div([html.Button("Add these entries to the selection", id=ids.WT_ADD_MASK, className="button", n_clicks=0),
                       html.Small("or click an outlier marker (▲) in any histogram, or a bar of outlier rows and columns", className="hint")], className="buttons")),
        spinner(html.Div([
            html.Div(dcc.Graph(id=ids.WT_ACROSS, figure=figures.empty_figure(""), config={"displaylogo": False}), className="half"),
            html.Div(dcc.Graph(id=ids.WT_OVERVIEW, figure=figures.empty_figure(""), config={"displaylogo": False}), className="half"),
        ], className="row")),
        card("Projection matrix",
             labelled("Matrix", dcc.Dropdown(id=ids.WT_MATRIX, options=[], placeholder="pick a matrix of this layer")),
             html.Div(id=ids.WT_NOTE),
             spinner(html.Div([
                 html.Div(dcc.Graph(id=ids.WT_MATRIX_HIST, figure=figures.empty_figure("Pick a matrix."), config={"displaylogo": False}), className="half"),
                 html.Div(dcc.Graph(id=ids.WT_LINES, figure=figures.empty_figure(""), config={"displaylogo": False}), className="half"),
             ], className="row"))),
    ])


def overview_dims(weights: dict, massive_dims: list[int]) -> list[int]:
    """The massive dims first, then the dims most often listed as norm outliers."""
    counts: dict[int, int] = {}
    for p in weights["parameters"]:
        if p["kind"] == "norm" and len(p["shape"]) == 1:
            for o in p["outliers"]["listed"]:
                counts[o["index"][0]] = counts.get(o["index"][0], 0) + 1
    ranked = [d for d in sorted(counts, key=lambda d: -counts[d]) if d not in massive_dims]
    return sorted((list(massive_dims) + ranked)[:MAX_OVERVIEW_DIMS])


def marked_dims(massive: list[dict], n: int = 3) -> list[int]:
    """The n dims with the largest massive values: more marks would hide the histogram."""
    peak: dict[int, float] = {}
    for m in massive:
        peak[m["dim"]] = max(peak.get(m["dim"], 0.0), abs(m["value"]))
    return sorted(peak, key=lambda d: -peak[d])[:n]


def first_massive_layer(massive: list[dict], n_layers: int) -> int:
    """The first layer that carries the largest massive value's dim at its full size (its first
    layer within 10% of the peak), or the middle layer when nothing is massive."""
    if not massive:
        return n_layers // 2
    top = max(massive, key=lambda m: abs(m["value"]))
    near = [m["layer"] for m in massive if m["dim"] == top["dim"] and abs(m["value"]) >= 0.9 * abs(top["value"])]
    return min(near)


@dash.callback(Output(ids.WT_K, "value"), Input(ids.WT_RULE, "value"), prevent_initial_call=True)
def default_k(rule: str):
    return DEFAULT_K[rule]


@dash.callback(
    Output(SUMMARY, "data"), Output(ids.WT_ACROSS, "figure"), Output(ids.WT_OVERVIEW, "figure"), Output(ids.WT_MESSAGE, "children"),
    Output(ids.WT_LAYER, "max"), Output(ids.WT_LAYER, "marks"), Output(ids.WT_LAYER, "value"),
    Input(ids.MODEL, "data"), Input(ids.WT_RULE, "value"), Input(ids.WT_K, "value"), Input(ids.PROMPT, "data"), State(ids.SCAN, "data"),
    State(ids.WT_LAYER, "value"), State(SUMMARY, "data"),
)
def load_summary(model: dict | None, rule: str, k: float | None, prompt: dict, cached: dict | None, layer: int, previous: dict | None):
    if not model:
        return None, figures.empty_figure(WAITING), figures.empty_figure(""), None, no_update, no_update, no_update
    if k is None:
        return no_update, no_update, no_update, problem_box("k: give a number"), no_update, no_update, no_update
    client = api()
    try:
        weights = client.weights(rule, k, kinds=("norm",))
        if cached and cached["key"][:2] == prompt_key(prompt) and cached["key"][-1] == model_key(model):
            massive = cached["scan"]["massive"]
        else:
            massive = client.scan(prompt["text"], prompt["prepend_bos"], rule="relative")["massive"]
        massive_dims = sorted({m["dim"] for m in massive})
        dims = overview_dims(weights, massive_dims)
        at_dims = client.norms_at_dims(dims)["entries"] if dims else []
    except ApiProblem as problem:
        return None, figures.empty_figure("No statistics: see the message above."), figures.empty_figure(""), problem_box(problem, "read the weight statistics"), no_update, no_update, no_update
    marked = marked_dims(massive)
    messages = [note(f"Massive-activation dims of the prompt (relative rule): {', '.join(map(str, massive_dims)) or 'none'}; the largest, {', '.join(map(str, marked)) or '—'}, are marked in purple.")]
    if model.get("quantized_source"):
        messages.append(note("Norm weights come from the GGUF file in F32 and are exact; projection matrices were dequantized, so their entries partly show the quantization grid."))
    summary = {"weights": weights, "massive_dims": marked, "at_dims": at_dims}
    overview = figures.norm_overview(at_dims, dims) if at_dims else figures.empty_figure("No outlier dims to show.")
    n = model["n_layers"]
    focus = layer if previous else first_massive_layer(massive, n)  # open where the massive activation appears
    return summary, figures.norm_summary(weights), overview, messages, n - 1, layer_marks(n), focus


@dash.callback(
    Output(ids.WT_HISTOGRAM, "children"), Output(ids.WT_OUTLIERS, "children"), Output(ids.WT_LISTED, "data"), Output(ids.WT_MATRIX, "options"), Output(ids.WT_MATRIX, "value"),
    Input(SUMMARY, "data"), Input(ids.WT_LAYER, "value"), State(ids.WT_RULE, "value"), State(ids.WT_K, "value"), State(ids.WT_MATRIX, "value"),
)
def show_layer_norms(summary: dict | None, layer: int, rule: str, k: float, matrix: str | None):
    if not summary:
        return None, None, None, [], None
    norms = [p for p in summary["weights"]["parameters"] if p["kind"] == "norm" and p["layer"] == layer]
    client = api()
    graphs, rows = [], []
    try:
        for p in norms:
            stats = client.tensor(p["name"], rule, k)
            marks = [{"dim": e["dim"], "value": e["value"]} for e in summary["at_dims"] if e["parameter"] == p["name"] and e["dim"] in summary["massive_dims"]]
            graphs.append(html.Div(dcc.Graph(id={"type": NORM_HIST, "name": p["name"]}, figure=figures.weight_histogram(stats, marks), config={"displaylogo": False}), className="half"))
            rows += [[p["name"], o["index"][0], o["value"]] for o in stats["outliers"]["listed"]]
        matrices = client.weights(rule, k, kinds=("matrix",), layers=(layer,))["parameters"]
    except ApiProblem as problem:
        return problem_box(problem, f"read the norms of layer {layer}"), None, None, [], None
    options = [{"label": m["name"].split(f".{layer}.", 1)[-1], "value": m["name"]} for m in matrices]
    names = [o["value"] for o in options]
    keep = matrix if matrix in names else next((n for n in names if n.endswith("down_proj.weight")), names[0] if names else None)
    listed = table(["parameter", "dim", "scale"], [[n, d, f"{v:.4g}"] for n, d, v in rows]) if rows else note("No outliers under this rule.")
    entries = [{"parameter": n, "dim": d} for n, d, _ in rows]
    return graphs or note(f"Layer {layer} has no norm weights."), listed, entries, options, keep


@dash.callback(
    Output(ids.WT_MATRIX_HIST, "figure"), Output(ids.WT_LINES, "figure"), Output(ids.WT_NOTE, "children"),
    Input(ids.WT_MATRIX, "value"), Input(ids.WT_RULE, "value"), Input(ids.WT_K, "value"),
)
def show_matrix(name: str | None, rule: str, k: float | None):
    if not name or k is None:
        return figures.empty_figure("Pick a matrix."), figures.empty_figure(""), None
    try:
        stats = api().tensor(name, rule, k)
    except ApiProblem as problem:
        return figures.empty_figure("No statistics: see the message."), figures.empty_figure(""), problem_box(problem, f"read {name}")
    layout_note = f"Layout {stats['layout']} (Hugging Face): a row writes one output dim, a column reads one input dim."
    return figures.weight_histogram(stats), figures.line_norms(stats), [note(layout_note)] + ([note(stats["note"])] if stats.get("note") else [])



def _rule_source(rule: str, k: float) -> str:
    return f"click: weights view, {rule} k={k:g}"


@dash.callback(
    Output(ids.MASK, "data", allow_duplicate=True), Output(ids.WT_MASK_MESSAGE, "children"),
    Input(ids.WT_ADD_MASK, "n_clicks"), Input({"type": NORM_HIST, "name": ALL}, "clickData"), Input(ids.WT_LINES, "clickData"), Input(ids.WT_MATRIX_HIST, "clickData"),
    State(ids.WT_LISTED, "data"), State(ids.WT_MATRIX, "value"), State(ids.WT_RULE, "value"), State(ids.WT_K, "value"), State(ids.MASK, "data"),
    prevent_initial_call=True,
)
def add_weights_to_mask(_n, _norm_clicks: list, _line_click: dict | None, _matrix_click: dict | None, listed: list[dict] | None, matrix: str | None, rule: str, k: float, mask: dict | None):
    action = user_action()
    if action is None:
        return no_update, no_update
    source = _rule_source(rule, k or 0)
    if action == ids.WT_ADD_MASK:
        if not listed:
            return no_update, problem_box("This layer's norms list no outliers under the rule.")
        by_parameter: dict[str, list[list[int]]] = {}
        for entry in listed:
            by_parameter.setdefault(entry["parameter"], []).append([entry["dim"]])
        parts = [{"parameter": name, "kind": "entries", "index": index, "source": source} for name, index in by_parameter.items()]
    else:
        point = (ctx.triggered[0]["value"] or {}).get("points", [{}])[0]
        if not isinstance(point.get("customdata"), list):  # a histogram bar, not an outlier marker
            return no_update, no_update
        if action == ids.WT_LINES:
            axis, index = point["customdata"]
            parts = [{"parameter": matrix, "kind": axis, "index": [int(index)], "source": source}]
        else:
            parameter = matrix if action == ids.WT_MATRIX_HIST else action["name"]
            parts = [{"parameter": parameter, "kind": "entries", "index": [[int(i) for i in point["customdata"]]], "source": source}]
    try:
        mask = add_to_mask(mask, parts=parts)
    except ApiProblem as problem:
        return no_update, problem_box(problem, "add to the selection")
    added = sum(len(p["index"]) for p in parts)
    kind = parts[0]["kind"] if added != 1 else {"entries": "entry", "rows": "row", "columns": "column"}[parts[0]["kind"]]
    return mask, note(f"Added {added} {kind} of {', '.join(sorted({p['parameter'] for p in parts}))}. Now {mask_line(mask)}.", "ok")
