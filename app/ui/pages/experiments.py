"""Experiments: launch a sweep (budgets × methods × seeds × rule settings) on the API's model,
watch each trial, read the summary over seeds with its 95% intervals, see the Pareto plots,
and put two sweeps side by side."""

from __future__ import annotations

from pathlib import PurePath

import dash
import plotly.graph_objects as go
from dash import ALL, Input, Output, State, dcc, html, no_update

from app.ui import ids, task_upload
from app.ui.client import ApiProblem
from app.ui.components import (
    api,
    card,
    labelled,
    note,
    problem_box,
    spinner,
    table,
    user_action,
)
from app.ui.figures import empty_figure, graph_config
from app.ui.state import format_value, options

dash.register_page(__name__, path="/experiments", name="Experiments", order=6, title="Outlier Lab · Experiments")

# component ids
LAUNCH = "ex-launch"
CANCEL = "ex-cancel"
BUDGETS = "ex-budgets"
METHODS = "ex-methods"
SEEDS = "ex-seeds"
STEPS = "ex-steps"
LR = "ex-lr"
RULES = "ex-rules"
WINDOWS = "ex-windows"
EVAL_LIMIT = "ex-eval-limit"
DATA = "ex-data"
TASK = "ex-task"  # the uploaded task file, as POST /api/task-data answered (task_upload.upload_block("ex"))
MESSAGE = "ex-message"
POLL = "ex-poll"
PANES = ("ex-left", "ex-right")  # each pane: a sweep chooser (its id) and the view below it (id + "-view")
FILE = "ex-file"  # pattern id {"type": FILE, "sweep", "name"}: a download button
DOWNLOAD = "ex-download"

POLL_MS = 1_500
ACTIVE = ("pending", "running")
DATA_CHOICES = {"outlier_reviews": "bundled task (outlier_reviews), lm-eval and held-out loss", "upload": "my task file (JSONL), held-out loss"}
COST_TITLES = {"trainable": "trainable parameters", "peak_memory_mb": "peak memory (MB)"}
DOWNLOADS = (
    "summary.csv", "summary.md", "summary.json",
    *(f"pareto_{which}{cost}.{kind}" for which in ("", "loss_") for cost in ("trainable", "peak_memory_mb") for kind in ("png", "svg")),
)


def layout(**_query) -> html.Div:
    return html.Div([
        dcc.Interval(id=POLL, interval=POLL_MS),
        dcc.Download(id=DOWNLOAD),
        card("Launch a sweep",
             html.Div([
                 labelled("Budgets", dcc.Input(id=BUDGETS, type="text", value="64,256"), "parameters, comma-separated"),
                 labelled("Methods", dcc.Checklist(id=METHODS, options=[], value=["mask", "random"])),
                 labelled("Seeds", dcc.Input(id=SEEDS, type="text", value="0,1"), "mean and 95% interval over these"),
                 labelled("Steps", dcc.Input(id=STEPS, type="number", value=10, min=1, step=1)),
                 labelled("Learning rate", dcc.Input(id=LR, type="number", value=1e-3, min=0, step="any")),
                 labelled("Mask rules", dcc.Checklist(id=RULES, options=[], value=[]), "empty: all rules"),
                 labelled("Layer windows", dcc.Input(id=WINDOWS, type="text", value="0"), "n around the strongest norm outlier; several: one setting each"),
                 labelled("lm-eval items", dcc.Input(id=EVAL_LIMIT, type="number", value=None, min=1, step=1, placeholder="all"), "the bundled task's first items"),
                 labelled("Data", dcc.RadioItems(id=DATA, options=[{"label": v, "value": k} for k, v in DATA_CHOICES.items()], value="outlier_reviews")),
             ], className="controls"),
             task_upload.upload_block("ex"),
             html.Div([
                 html.Button("Launch sweep", id=LAUNCH, className="button primary", n_clicks=0),
                 html.Button("Cancel sweep", id=CANCEL, className="button danger", n_clicks=0),
             ], className="buttons")),
        spinner(html.Div(id=MESSAGE)),
        html.Div([
            html.Div([labelled("Sweep", dcc.Dropdown(id=pane, options=[], value=None, placeholder="choose a sweep")), html.Div(id=f"{pane}-view")], className="half")
            for pane in PANES
        ], className="row"),
    ])


@dash.callback(Output(METHODS, "options"), Output(RULES, "options"), Input(ids.VOCAB, "data"))
def offer_vocabulary(vocab: dict | None):
    if not vocab:
        return no_update, no_update
    return options(vocab["methods"]), options(vocab["mask_rules"])


def numbers(text: str | None) -> list[int] | None:
    """"64, 256" -> [64, 256]; None when it is not a list of whole numbers."""
    try:
        values = [int(v.replace("_", "").strip()) for v in (text or "").split(",") if v.strip()]
    except ValueError:
        return None
    return values or None


def sweep_body(budgets: str | None, methods: list[str], seeds: str | None, steps, lr, rules: list[str], windows: str | None, eval_limit,
               data: str = "outlier_reviews", task: dict | None = None) -> dict | str:
    """The POST /api/sweeps body, or what is wrong with the form, in words."""
    parsed = {"budgets": numbers(budgets), "seeds": numbers(seeds), "windows": numbers(windows)}
    bad = [name for name, value in parsed.items() if value is None]
    if bad:
        return f"{bad[0]}: give whole numbers separated by commas"
    if not methods:
        return "methods: choose at least one"
    if not steps or steps < 1 or not lr or lr <= 0:
        return "steps and learning rate: give positive numbers"
    if data == "upload" and not task:
        return "data: upload a JSONL task file first (or choose the bundled task)"
    body = {**parsed, "methods": methods, "steps": int(steps), "lr": float(lr), "data": task["id"] if data == "upload" else data}
    if rules:
        body["rules"] = [rules]
    if eval_limit:
        body["eval_limit"] = int(eval_limit)
    return body


@dash.callback(
    Output(PANES[0], "options", allow_duplicate=True), Output(PANES[0], "value"), Output(MESSAGE, "children"),
    Input(LAUNCH, "n_clicks"), Input(CANCEL, "n_clicks"),
    State(BUDGETS, "value"), State(METHODS, "value"), State(SEEDS, "value"), State(STEPS, "value"), State(LR, "value"),
    State(RULES, "value"), State(WINDOWS, "value"), State(EVAL_LIMIT, "value"), State(PANES[0], "value"), State(DATA, "value"), State(TASK, "data"),
    prevent_initial_call=True,
)
def launch_or_cancel(_l, _c, budgets, methods, seeds, steps, lr, rules, windows, eval_limit, shown: str | None, data: str = "outlier_reviews", task: dict | None = None):
    action = user_action()
    if action is None:
        return no_update, no_update, no_update
    if action == CANCEL:
        if not shown:
            return no_update, no_update, problem_box("Choose the sweep to cancel in the left pane.")
        try:
            api().cancel_sweep(shown)
        except ApiProblem as problem:
            return no_update, no_update, problem_box(problem, "cancel the sweep")
        return no_update, no_update, note(f"Cancel asked: {shown} stops its running trial at the next step; finished trials stay.")
    body = sweep_body(budgets, methods or [], seeds, steps, lr, rules or [], windows, eval_limit, data, task)
    if isinstance(body, str):
        return no_update, no_update, problem_box(body)
    try:
        sweep = api().start_sweep(body)
        listed = api().sweeps()["sweeps"]
    except ApiProblem as problem:
        return no_update, no_update, problem_box(problem, "launch the sweep")
    # the options first hold the new sweep, in the same update as the value: a dropdown drops a value it does not offer
    return sweep_choices(listed), sweep["id"], note(f"Sweep {sweep['id']}: {sweep['trials']} trials, {sweep['state']}. Each trial is a run process; progress follows below.", "ok")


@dash.callback(Output(TASK, "data"), Output(f"{TASK}-info", "children"), Input(f"{TASK}-upload", "contents"), State(f"{TASK}-upload", "filename"),
               prevent_initial_call=True)
def upload_task(contents: str | None, filename: str | None):
    return task_upload.send(contents, filename)


@dash.callback(
    Output(PANES[0], "options"), Output(PANES[1], "options"),
    Output(f"{PANES[0]}-view", "children"), Output(f"{PANES[1]}-view", "children"), Output(POLL, "disabled"),
    Input(POLL, "n_intervals"), Input(PANES[0], "value"), Input(PANES[1], "value"),
)
def show_sweeps(_n, left: str | None, right: str | None):
    try:
        listed = api().sweeps()["sweeps"]
    except ApiProblem as problem:
        return no_update, no_update, problem_box(problem, "list the sweeps"), None, False
    choices = sweep_choices(listed)
    views, active = [], False
    for chosen in (left, right):
        view, running = pane_view(chosen)
        views.append(view)
        active = active or running
    return choices, choices, views[0], views[1], not active


def sweep_choices(listed: list[dict]) -> list[dict]:
    return [{"label": f"{s['id']} · {s['state']} · {s['done']}/{s['trials']}", "value": s["id"]} for s in listed]


def pane_view(sweep_id: str | None) -> tuple[list | html.Div, bool]:
    """(the pane's contents, whether its sweep is still going)."""
    if not sweep_id:
        return note("Launch a sweep, or choose one to show here."), False
    try:
        sweep = api().sweep(sweep_id)
    except ApiProblem as problem:
        return problem_box(problem, f"read {sweep_id}"), False
    return sweep_view(sweep), sweep["state"] in ACTIVE


def sweep_view(sweep: dict) -> list:
    share = sweep["done"] / sweep["trials"] if sweep["trials"] else 0.0
    data = PurePath(sweep["config"].get("data") or "").name  # an upload's stored file, or the bundled task's name
    head = html.Div(f"{sweep['id']} · {sweep['model']} · {data} · {sweep['state']} · {sweep['done']} of {sweep['trials']} trials done",
                    className="sweep-state", **{"data-state": sweep["state"]})
    bar = html.Div(html.Div(className=f"progress-bar {sweep['state']}", style={"width": f"{share:.1%}"}), className="progress", role="progressbar")
    graphs = [dcc.Graph(figure=pareto_figure(sweep["pareto"][cost], sweep["metric"], cost, base_value(sweep)), config=graph_config(f"pareto-{cost}"),
                        className="sweep-pareto") for cost in COST_TITLES]
    files = [html.Button(name, id={"type": FILE, "sweep": sweep["id"], "name": name}, className="button", n_clicks=0) for name in DOWNLOADS if name in sweep["files"]]
    return [
        head, bar,
        card("Trials", html.Div(trials_table(sweep["trial_views"]), className="table-scroll")),
        card("Summary over seeds", html.Div(summary_table(sweep["summary"], sweep["metric"]), className="table-scroll summary-table")),
        *graphs,
        html.Div(files, className="buttons") if files else None,
    ]


def trials_table(trials: list[dict]) -> html.Table:
    rows = []
    for t in trials:
        progress = t.get("progress")
        doing = f"step {progress['step']} of {progress['total']}" + (f", loss {progress['loss']:.3f}" if progress and progress.get("loss") is not None else "") if progress else ""
        acc = next((v for k, v in t["metrics"].items() if k.endswith(".acc") and not k.startswith("base.")), None)
        rows.append([t["method"], f"{t['budget']:,}", t["seed"], t["state"], doing or (t.get("error") or "")[:80],
                     f"{t['trainable']:,}" if t.get("trainable") is not None else "", format_value(acc), format_value(t["metrics"].get("held_out_loss"))])
    return table(["method", "budget", "seed", "state", "progress", "trainable", "accuracy", "held-out loss"], rows, class_name="trials-table")


def with_interval(row: dict | None) -> str:
    if row is None:
        return ""
    if row["ci_low"] is None:
        return f"{row['mean']:.4f}"
    return f"{row['mean']:.4f} [{row['ci_low']:.4f}, {row['ci_high']:.4f}]"


def mean_of(found: dict[str, dict], metric: str, form: str) -> str:
    return form.format(found[metric]["mean"]) if metric in found else ""


def summary_table(summary: list[dict], metric: str) -> html.Table | html.Div:
    if not summary:
        return note("No trial has finished yet.")
    groups: dict[tuple, dict[str, dict]] = {}
    for row in summary:
        groups.setdefault((row["method"], row["budget"], row["setting"]), {})[row["metric"]] = row
    settings = {setting for _, _, setting in groups}
    rows = []
    for (method, budget, setting), found in sorted(groups.items(), key=lambda item: (item[0][2], item[0][1], item[0][0])):
        rows.append([method, f"{budget:,}", *([setting] if len(settings) > 1 else []), mean_of(found, "trainable", "{:,.0f}"), max(r["n"] for r in found.values()),
                     with_interval(found.get(metric)), with_interval(found.get("held_out_loss")), mean_of(found, "peak_memory_mb", "{:,.0f}"),
                     mean_of(found, "step_s", "{:.3f}"), mean_of(found, "tokens_per_s", "{:,.0f}")])
    columns = ["method", "budget", *(["rules"] if len(settings) > 1 else []), "trainable", "seeds", f"{metric} (95% CI)", "held-out loss (95% CI)",
               "peak MB", "s/step", "tokens/s"]
    return table(columns, rows)


def base_value(sweep: dict) -> float | None:
    return next((r["mean"] for r in sweep["summary"] if r["metric"] == f"base.{sweep['metric']}"), None)


def pareto_figure(points: list[dict], metric: str, cost: str, base: float | None = None) -> go.Figure:
    """The metric's mean (95% interval) against a cost, one trace per method, the front dashed."""
    if not points:
        return empty_figure("The Pareto plot appears as trials finish.")
    fig = go.Figure()
    for method in dict.fromkeys(p["method"] for p in points):
        mine = sorted((p for p in points if p["method"] == method), key=lambda p: p["cost"])
        fig.add_trace(go.Scatter(
            x=[p["cost"] for p in mine], y=[p["value"] for p in mine], mode="markers+lines", name=method,
            text=[f"budget {p['budget']:,}" for p in mine],
            error_y={"type": "data", "symmetric": False,
                     "array": [p["ci_high"] - p["value"] if p["ci_high"] is not None else 0 for p in mine],
                     "arrayminus": [p["value"] - p["ci_low"] if p["ci_low"] is not None else 0 for p in mine]},
        ))
    front = sorted((p for p in points if p["on_front"]), key=lambda p: p["cost"])
    fig.add_trace(go.Scatter(x=[p["cost"] for p in front], y=[p["value"] for p in front], mode="lines", name="Pareto front", line={"dash": "dash", "color": "black"}))
    if base is not None:
        fig.add_hline(y=base, line_dash="dot", annotation_text="base model")
    fig.update_layout(title=f"{metric} vs {COST_TITLES[cost]}", template="plotly_white", height=360, margin={"l": 50, "r": 10, "t": 40, "b": 40},
                      xaxis_title=COST_TITLES[cost], yaxis_title=metric)
    fig.update_xaxes(type="log")
    return fig


@dash.callback(Output(DOWNLOAD, "data"), Output(MESSAGE, "children", allow_duplicate=True),
               Input({"type": FILE, "sweep": ALL, "name": ALL}, "n_clicks"), prevent_initial_call=True)
def download(_clicks: list[int]):
    target = user_action()
    if not isinstance(target, dict):
        return no_update, no_update
    try:
        content = api().sweep_file(target["sweep"], target["name"])
    except ApiProblem as problem:
        return no_update, problem_box(problem, f"download {target['name']}")
    return dcc.send_bytes(content, f"{target['sweep']}-{target['name']}"), no_update
