"""Weights: the norm scales of a layer as histograms (the bimodal plots) with the rule's
outliers and the massive-activation dims marked; norm scales at those dims across layers;
and a projection matrix's entries and outlier rows and columns."""

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
    graph,
    labelled,
    layer_marks,
    mask_line,
    note,
    problem_box,
    spinner,
    table,
    user_action,
    view_in_url,
)
from app.ui.state import cached_scan, options

dash.register_page(__name__, path="/weights", name="Weights", order=3, title="Outlier Lab · Weights")

SUMMARY = "wt-summary"  # read_summary's answer: norm statistics, the prompt's massive dims, the norms at the dims compared
NORM_HIST = "wt-norm-hist"  # pattern-matched: one histogram per norm of the layer
MAX_OVERVIEW_DIMS = 40
SEED = "wt-seed"  # the layer the URL asks for, if any
FOCUSED = "wt-focused"  # true once the layer slider was placed: later summaries (a new k) leave it where it is


def layout(**query) -> html.Div:
    rule, k, layer = query.get("rule") or "sigma", url_state.read(query, "k", float, None), url_state.read(query, "layer", int, None)
    matrix = query.get("matrix")
    return html.Div([
        dcc.Store(id=ids.WT_QUERY),
        dcc.Store(id=SUMMARY),
        dcc.Store(id=SEED, data={"layer": layer}),
        dcc.Store(id=FOCUSED, data=False),
        html.Div([
            labelled("Outlier rule", dcc.RadioItems(id=ids.WT_RULE, options=chosen_only(rule), value=rule, inline=True)),
            labelled("k", dcc.Input(id=ids.WT_K, type="number", min=0, step="any", debounce=True, value=k), "σ multiples; percentile: 50 < k < 100"),
            labelled("Layer", dcc.Slider(id=ids.WT_LAYER, min=0, max=max(layer or 0, 1), step=1, value=layer or 0, marks=None, tooltip={"placement": "bottom"}), wide=True),
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
            html.Div(graph(ids.WT_ACROSS, figures.empty_figure(""), "largest-norm-scale-per-layer"), className="half"),
            html.Div(graph(ids.WT_OVERVIEW, figures.empty_figure(""), "norm-scale-at-outlier-dims"), className="half"),
        ], className="row")),
        card("Projection matrix",
             labelled("Matrix", dcc.Dropdown(id=ids.WT_MATRIX, options=chosen_only(matrix) if matrix else [], value=matrix, placeholder="pick a matrix of this layer")),
             html.Div(id=ids.WT_NOTE),
             spinner(html.Div([
                 html.Div(graph(ids.WT_MATRIX_HIST, figures.empty_figure("Pick a matrix."), "matrix-histogram"), className="half"),
                 html.Div(graph(ids.WT_LINES, figures.empty_figure(""), "outlier-rows-and-columns"), className="half"),
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


@dash.callback(Output(ids.WT_RULE, "options"), Input(ids.VOCAB, "data"))
def offer_rules(vocab: dict | None):
    return options(vocab["weight_rules"]) if vocab else no_update


@dash.callback(Output(ids.WT_K, "value"), Input(ids.WT_RULE, "value"), Input(ids.VOCAB, "data"), State(ids.WT_K, "value"))
def default_k(rule: str, vocab: dict | None, k: float | None = None):
    """The rule's default threshold whenever the user picks a rule, and once the vocabulary arrives
    when no k is set yet (a k from the URL stays)."""
    if not vocab or (k is not None and user_action() != ids.WT_RULE):
        return no_update
    return vocab["weight_rules"][rule]["k"]


def read_summary(client: ApiClient, rule: str, k: float, prompt: dict, model: dict, cached: dict | None) -> dict:
    """Norm statistics of every layer, the prompt's massive dims (from the overview's scan when it has
    one for this prompt and model), and the norms at the dims worth comparing. Raises ApiProblem."""
    weights = client.weights(rule, k, kinds=("norm",))
    massive = (cached_scan(cached, prompt, model) or client.scan(prompt["text"], prompt["prepend_bos"], rule="relative"))["massive"]
    massive_dims = sorted({m["dim"] for m in massive})
    dims = overview_dims(weights, massive_dims)
    at_dims = client.norms_at_dims(dims)["entries"] if dims else []
    return {"weights": weights, "massive_dims": massive_dims, "marked": marked_dims(massive), "dims": dims, "at_dims": at_dims,
            "focus": first_massive_layer(massive, model["n_layers"])}


def summary_notes(summary: dict, model: dict) -> list:
    marked = summary["marked"]
    notes = [note(f"Massive-activation dims of the prompt (relative rule): {', '.join(map(str, summary['massive_dims'])) or 'none'}; the largest, {', '.join(map(str, marked)) or '—'}, are marked in purple.")]
    if model.get("quantized_source"):
        notes.append(note("Norm weights come from the GGUF file in F32 and are exact; projection matrices were dequantized, so their entries partly show the quantization grid."))
    return notes


def norms_at_dims_figure(summary: dict):
    return figures.norm_overview(summary["at_dims"], summary["dims"]) if summary["at_dims"] else figures.empty_figure("No outlier dims to show.")


@dash.callback(
    Output(SUMMARY, "data"), Output(ids.WT_ACROSS, "figure"), Output(ids.WT_OVERVIEW, "figure"), Output(ids.WT_MESSAGE, "children"),
    Output(ids.WT_LAYER, "max"), Output(ids.WT_LAYER, "marks"), Output(ids.WT_LAYER, "value"),
    Output(FOCUSED, "data"),
    Input(ids.MODEL, "data"), Input(ids.WT_RULE, "value"), Input(ids.WT_K, "value"), Input(ids.PROMPT, "data"), State(ids.SCAN, "data"),
    State(ids.WT_LAYER, "value"), State(SEED, "data"), State(FOCUSED, "data"),
)
def load_summary(model: dict | None, rule: str, k: float | None, prompt: dict, cached: dict | None, layer: int, seed: dict, focused: bool):
    unchanged = (no_update,) * 4
    if not model:
        return None, figures.empty_figure(WAITING), figures.empty_figure(""), None, *unchanged
    if k is None:  # cleared by the user, or the rule's default still on its way with the vocabulary
        return no_update, no_update, no_update, problem_box("k: give a number") if user_action() == ids.WT_K else no_update, *unchanged
    try:
        summary = read_summary(api(), rule, k, prompt, model, cached)
    except ApiProblem as problem:
        return None, figures.empty_figure("No statistics: see the message above."), figures.empty_figure(""), problem_box(problem, "read the weight statistics"), *unchanged
    n = model["n_layers"]
    return (summary, figures.norm_summary(summary["weights"]), norms_at_dims_figure(summary), summary_notes(summary, model), n - 1, layer_marks(n),
            min(placed_layer(layer, seed, focused, summary), n - 1), True)


def placed_layer(layer: int, seed: dict, focused: bool, summary: dict) -> int:
    """Where the slider goes with a new summary: where the user left it once placed (an invalid k
    in between changes nothing); first, the URL's layer, else where the massive activation appears."""
    if focused:
        return layer
    return seed["layer"] if seed["layer"] is not None else summary["focus"]


def norm_graph(stats: dict, summary: dict) -> html.Div:
    """One norm's histogram, the prompt's largest massive dims marked on it."""
    marks = [{"dim": e["dim"], "value": e["value"]} for e in summary["at_dims"] if e["parameter"] == stats["name"] and e["dim"] in summary["marked"]]
    return html.Div(graph({"type": NORM_HIST, "name": stats["name"]}, figures.weight_histogram(stats, marks), stats["name"].replace(".", "-")), className="half")


def matrix_options(matrices: list[str], layer: int, current: str | None) -> tuple[list[dict], str | None]:
    """The layer's matrices by their name within the block, and the one to show: the current one
    when the layer has it, else the down-projection (where super weights live), else the first."""
    names = [{"label": name.split(f".{layer}.", 1)[-1], "value": name} for name in matrices]
    keep = current if current in matrices else next((n for n in matrices if n.endswith("down_proj.weight")), matrices[0] if matrices else None)
    return names, keep


@dash.callback(
    Output(ids.WT_HISTOGRAM, "children"), Output(ids.WT_OUTLIERS, "children"), Output(ids.WT_LISTED, "data"), Output(ids.WT_MATRIX, "options"), Output(ids.WT_MATRIX, "value"),
    Input(SUMMARY, "data"), Input(ids.WT_LAYER, "value"), State(ids.WT_RULE, "value"), State(ids.WT_K, "value"), State(ids.WT_MATRIX, "value"),
)
def show_layer_norms(summary: dict | None, layer: int, rule: str, k: float, matrix: str | None):
    if not summary:
        return None, None, None, [], None
    try:
        found = api().layer_weights(layer, rule, k)
    except ApiProblem as problem:
        return problem_box(problem, f"read the norms of layer {layer}"), None, None, [], None
    listed = [{"parameter": stats["name"], "dim": o["index"][0], "value": o["value"]} for stats in found["norms"] for o in stats["outliers"]["listed"]]
    graphs = [norm_graph(stats, summary) for stats in found["norms"]] or note(f"Layer {layer} has no norm weights.")
    shown = table(["parameter", "dim", "scale"], [[e["parameter"], e["dim"], f"{e['value']:.4g}"] for e in listed]) if listed else note("No outliers under this rule.")
    return graphs, shown, [{"parameter": e["parameter"], "dim": e["dim"]} for e in listed], *matrix_options(found["matrices"], layer, matrix)


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
    parts = weight_parts(action, ctx.triggered[0]["value"], listed, matrix, _rule_source(rule, k or 0))
    if parts is None:  # a histogram bar, not an outlier marker
        return no_update, no_update
    if not parts:
        return no_update, problem_box("This layer's norms list no outliers under the rule.")
    try:
        mask = add_to_mask(mask, parts=parts)
    except ApiProblem as problem:
        return no_update, problem_box(problem, "add to the selection")
    return mask, note(f"Added {added_line(parts)}. Now {mask_line(mask)}.", "ok")


def weight_parts(action: str | dict, click: dict | None, listed: list[dict] | None, matrix: str | None, source: str) -> list[dict] | None:
    """The mask parts a press asks for: every listed norm outlier of the layer, or the entry, row or
    column of the clicked outlier marker (None when the click hit a histogram bar)."""
    if action == ids.WT_ADD_MASK:
        by_parameter: dict[str, list[list[int]]] = {}
        for entry in listed or []:
            by_parameter.setdefault(entry["parameter"], []).append([entry["dim"]])
        return [{"parameter": name, "kind": "entries", "index": index, "source": source} for name, index in by_parameter.items()]
    point = (click or {}).get("points", [{}])[0]
    if not isinstance(point.get("customdata"), list):
        return None
    if action == ids.WT_LINES:
        axis, index = point["customdata"]
        return [{"parameter": matrix, "kind": axis, "index": [int(index)], "source": source}]
    parameter = matrix if action == ids.WT_MATRIX_HIST else action["name"]
    return [{"parameter": parameter, "kind": "entries", "index": [[int(i) for i in point["customdata"]]], "source": source}]


def added_line(parts: list[dict]) -> str:
    """'3 entries of model.layers.2.input_layernorm.weight', '1 row of …'."""
    added = sum(len(p["index"]) for p in parts)
    kind = parts[0]["kind"] if added != 1 else {"entries": "entry", "rows": "row", "columns": "column"}[parts[0]["kind"]]
    return f"{added} {kind} of {', '.join(sorted({p['parameter'] for p in parts}))}"


view_in_url("/weights", ids.WT_QUERY, {
    "rule": Input(ids.WT_RULE, "value"), "k": Input(ids.WT_K, "value"), "layer": Input(ids.WT_LAYER, "value"), "matrix": Input(ids.WT_MATRIX, "value"),
})
