"""Overview: one prompt through every layer — the rise, plateau and fall of the largest activations,
the massive ones listed, the dims and tokens that carry them, and the attention sink per layer."""

from __future__ import annotations

import dash
from dash import Input, Output, State, dcc, html

from app.ui import figures, ids
from app.ui.client import ApiProblem
from app.ui.components import (
    WAITING,
    api,
    card,
    chosen_only,
    graph,
    labelled,
    note,
    problem_box,
    record,
    spinner,
    table,
    view_in_url,
)
from app.ui.state import (
    DEFAULT_SITE,
    cached_scan,
    format_value,
    massive_groups,
    options,
    recurring,
    scan_cache,
)

dash.register_page(__name__, path="/", name="Overview", order=0, title="Outlier Lab · Overview")

FRESH_SCAN = "ov-fresh-scan"  # a scan this page just fetched, on its way to the shell's SCAN store


def layout(**query) -> html.Div:
    site, rule = query.get("site") or DEFAULT_SITE, query.get("rule") or "paper"
    return html.Div([
        dcc.Store(id=ids.OV_QUERY),
        dcc.Store(id=FRESH_SCAN),
        html.Div([
            labelled("Site", dcc.Dropdown(id=ids.OV_SITE, options=chosen_only(site), value=site, clearable=False)),
            labelled("Massive-activation rule", dcc.RadioItems(id=ids.OV_RULE, options=chosen_only(rule), value=rule)),
        ], className="controls"),
        spinner(
            html.Div(id=ids.OV_MESSAGE),
            graph(ids.OV_CURVE, figures.empty_figure("Run a prompt to see its layers."), "largest-activations-per-layer"),
            html.Div([
                card("Massive activations", html.Div(id=ids.OV_MASSIVE), class_name="half"),
                card("Recurring dims and tokens", html.Div(id=ids.OV_RECURRING), class_name="half"),
            ], className="row"),
            graph(ids.OV_SINK, figures.empty_figure(""), "attention-sink-per-layer"),
            id=ids.OV_LOADING,
        ),
    ])


def massive_table(scan: dict) -> html.Div:
    groups = massive_groups(scan["massive"], scan["tokens"])
    if not groups:
        return note("None under this rule. Small models stay below the paper rule's absolute floor in early layers: try the relative rule.")
    rows = [
        [g["position"], repr(g["token"]), g["dim"], g["layers"], format_value(g["peak"]),
         dcc.Link("explore", href=f"/layer?layer={g['peak_layer']}&position={g['position']}&dim={g['dim']}", className="explore-link")]
        for g in groups
    ]
    return table(["pos", "token", "dim", "layers", "peak x", ""], rows, class_name="massive-table")


def recurring_view(scan: dict) -> html.Div:
    found = recurring(scan["massive"], scan["tokens"])
    if not found["dims"]:
        return note("No massive activations to count.")
    n_layers = len(scan["layers"])
    dims = table(["dim", "layers"], [[d["dim"], f"{d['layers']} / {n_layers}"] for d in found["dims"]])
    tokens = table(["pos", "token", "layers"], [[t["position"], repr(t["token"]), f"{t['layers']} / {n_layers}"] for t in found["tokens"]])
    return html.Div([html.Div([html.H4("dims"), dims], className="half"), html.Div([html.H4("tokens"), tokens], className="half")], className="row")


def scan_views(scan: dict, site: str) -> tuple:
    """(layer curve, sink curve, massive table, recurring dims and tokens, summary line) of a scan."""
    summary = note(f"{len(scan['tokens'])} tokens · {len(scan['massive'])} massive entries in {len({m['layer'] for m in scan['massive']})} layers · site {site}")
    return figures.layer_curve(scan), figures.sink_curve(scan["sink_share"]), massive_table(scan), recurring_view(scan), summary


def blank_views(why: str) -> tuple:
    """The curve saying why it is empty, and nothing in the other views."""
    return figures.empty_figure(why), figures.empty_figure(""), None, None


@dash.callback(Output(ids.OV_SITE, "options"), Output(ids.OV_RULE, "options"), Input(ids.VOCAB, "data"))
def offer_sites_and_rules(vocab: dict | None):
    if not vocab:
        return dash.no_update, dash.no_update
    return options(vocab["sites"]), options(vocab["massive_rules"])


# The scan goes to this page's own store, and from there to the shell's: a callback that writes a
# shell store from page inputs runs on the app's first load, before the page exists, and fails there.
@dash.callback(
    Output(ids.OV_CURVE, "figure"), Output(ids.OV_SINK, "figure"), Output(ids.OV_MASSIVE, "children"), Output(ids.OV_RECURRING, "children"),
    Output(ids.OV_MESSAGE, "children"), Output(FRESH_SCAN, "data"),
    Input(ids.PROMPT, "data"), Input(ids.MODEL, "data"), Input(ids.OV_SITE, "value"), Input(ids.OV_RULE, "value"),
    State(ids.SCAN, "data"),
)
def show_scan(prompt: dict, model: dict | None, site: str, rule: str, cached: dict | None):
    if not model:
        return *blank_views(WAITING), None, dash.no_update
    scan = cached_scan(cached, prompt, model, site, rule)
    if scan is not None:
        return *scan_views(scan, site), dash.no_update
    try:
        scan = api().scan(prompt["text"], prompt["prepend_bos"], site=site, rule=rule)
    except ApiProblem as problem:
        return *blank_views("No scan: see the message above."), problem_box(problem, "scan the prompt"), dash.no_update
    record_scan(scan, prompt, model, site, rule)
    return *scan_views(scan, site), scan_cache(scan, prompt, model, site, rule)


def record_scan(scan: dict, prompt: dict, model: dict, site: str, rule: str) -> None:
    peaks = [max((abs(t["value"]) for t in layer["top"]), default=0.0) for layer in scan["layers"]]
    title = f"scan · {len(scan['tokens'])} tokens · {site} · {rule} rule · {len(scan['massive'])} massive entries"
    results = {"tokens": len(scan["tokens"]), "massive": len(scan["massive"]), "max_abs_per_layer": peaks, "sink_share": scan["sink_share"]}
    record("scan", title, model, {"text": prompt["text"], "prepend_bos": prompt["prepend_bos"], "site": site, "rule": rule}, results)


@dash.callback(Output(ids.SCAN, "data"), Input(FRESH_SCAN, "data"), prevent_initial_call=True)
def keep_scan(fresh: dict | None):
    """The attention and weights pages reuse it for the same prompt and model."""
    return fresh or dash.no_update


view_in_url("/", ids.OV_QUERY, {"site": Input(ids.OV_SITE, "value"), "rule": Input(ids.OV_RULE, "value")})
