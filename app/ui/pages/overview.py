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
    labelled,
    note,
    problem_box,
    spinner,
    table,
)
from app.ui.state import (
    SITES,
    format_value,
    massive_groups,
    model_key,
    prompt_key,
    recurring,
)

dash.register_page(__name__, path="/", name="Overview", order=0, title="Outlier Lab · Overview")

RULE_LABELS = {
    "paper": "paper: |x| > 100 and > 1000 × median",
    "relative": "relative: |x| > 300 × median (small models)",
}


def layout(**_query) -> html.Div:
    return html.Div([
        html.Div([
            labelled("Site", dcc.Dropdown(id=ids.OV_SITE, options=[{"label": v, "value": k} for k, v in SITES.items()], value="resid_post", clearable=False)),
            labelled("Massive-activation rule", dcc.RadioItems(id=ids.OV_RULE, options=[{"label": v, "value": k} for k, v in RULE_LABELS.items()], value="paper")),
        ], className="controls"),
        spinner(
            html.Div(id=ids.OV_MESSAGE),
            dcc.Graph(id=ids.OV_CURVE, figure=figures.empty_figure("Run a prompt to see its layers."), config={"displaylogo": False}),
            html.Div([
                card("Massive activations", html.Div(id=ids.OV_MASSIVE), class_name="half"),
                card("Recurring dims and tokens", html.Div(id=ids.OV_RECURRING), class_name="half"),
            ], className="row"),
            dcc.Graph(id=ids.OV_SINK, figure=figures.empty_figure(""), config={"displaylogo": False}),
            id=ids.OV_LOADING,
        ),
    ])


def massive_table(scan: dict) -> html.Div:
    groups = massive_groups(scan["massive"], scan["tokens"])
    if not groups:
        return note("None under this rule. Small models stay below the paper's |x| > 100 floor in early layers: try the relative rule.")
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


@dash.callback(
    Output(ids.OV_CURVE, "figure"), Output(ids.OV_SINK, "figure"), Output(ids.OV_MASSIVE, "children"), Output(ids.OV_RECURRING, "children"),
    Output(ids.OV_MESSAGE, "children"), Output(ids.SCAN, "data"),
    Input(ids.PROMPT, "data"), Input(ids.MODEL, "data"), Input(ids.OV_SITE, "value"), Input(ids.OV_RULE, "value"),
    State(ids.SCAN, "data"),
)
def show_scan(prompt: dict, model: dict | None, site: str, rule: str, cached: dict | None):
    if not model:
        blank = figures.empty_figure(WAITING)
        return blank, figures.empty_figure(""), None, None, None, dash.no_update
    key = [*prompt_key(prompt), site, rule, model_key(model)]
    if cached and cached.get("key") == key:
        scan = cached["scan"]
    else:
        try:
            scan = api().scan(prompt["text"], prompt["prepend_bos"], site=site, rule=rule)
        except ApiProblem as problem:
            blank = figures.empty_figure("No scan: see the message above.")
            return blank, figures.empty_figure(""), None, None, problem_box(problem, "scan the prompt"), dash.no_update
    summary = note(f"{len(scan['tokens'])} tokens · {len(scan['massive'])} massive entries in {len({m['layer'] for m in scan['massive']})} layers · site {site}")
    fresh = dash.no_update if cached and cached.get("key") == key else {"key": key, "scan": scan}
    return figures.layer_curve(scan), figures.sink_curve(scan["sink_share"]), massive_table(scan), recurring_view(scan), summary, fresh
