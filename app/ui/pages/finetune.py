"""Fine-tune: train only the mask's coordinates (and baselines at the same budget) as a job
on the API; follow its progress and loss live, cancel it, then compare the runs and apply
one of them to the served model (the shell's bar then says so on every page)."""

from __future__ import annotations

import base64
import binascii
from pathlib import PurePath

import dash
from dash import ALL, Input, Output, State, dcc, html, no_update

from app.ui import figures, ids, task_upload, url_state
from app.ui.client import ApiProblem
from app.ui.components import (
    WAITING,
    api,
    card,
    graph,
    labelled,
    mask_line,
    note,
    problem_box,
    record,
    spinner,
    table,
    user_action,
    view_in_url,
)
from app.ui.state import format_value, options

dash.register_page(__name__, path="/finetune", name="Fine-tune", order=5, title="Outlier Lab · Fine-tune")

POLL_MS = 1_000
JOBS_POLL_MS = 2_000
JOBS_POLL = "ft-jobs-poll"
JOBS_SEEN = "ft-jobs-seen"  # the listed jobs as last drawn: the table is redrawn only when they change
JOB_MESSAGE = "ft-job-message"
JOB_BUTTON = "ft-job-button"  # pattern id {"type": JOB_BUTTON, "job", "action": "follow" | "cancel"}
USUAL_LR = (1e-6, 1.0)  # a learning rate outside this range almost surely diverges or does nothing
DATA = {"prose": "bundled prose", "code": "bundled code", "upload": "my text file", "outlier_reviews": "bundled task (outlier_reviews)", "task": "my task file (JSONL)"}
TASK = "ft-task"  # the uploaded task file, as POST /api/task-data answered (task_upload.upload_block("ft"))
CHECKPOINT = {"auto": "mask, random and LN runs", "on": "every run", "off": "no run"}
ACTIVE = ("queued", "running")


def layout(**query) -> html.Div:
    data = query.get("data") if query.get("data") in DATA else "prose"
    checkpoint = query.get("checkpoint") if query.get("checkpoint") in CHECKPOINT else "auto"
    return html.Div([
        dcc.Store(id=ids.FT_QUERY),
        dcc.Interval(id=ids.FT_POLL, interval=POLL_MS, disabled=True),
        dcc.Interval(id=JOBS_POLL, interval=JOBS_POLL_MS),
        dcc.Store(id=JOBS_SEEN),
        dcc.Store(id=ids.FT_LIVE, storage_type="session"),  # the live loss history survives a reload
        card("Launch",
             html.Div(id=ids.FT_MASK),
             html.Div([
                 labelled("Baselines", dcc.Checklist(id=ids.FT_BASELINES, options=[], value=url_state.listed(query, "baselines", ["random"]))),
                 labelled("Steps", dcc.Input(id=ids.FT_STEPS, type="number", value=url_state.read(query, "steps", url_state.number, 30), min=1, step="any")),  # any: 2.5 reaches the check and is refused in words
                 labelled("Learning rate", html.Div([
                     dcc.Input(id=ids.FT_LR, type="number", value=url_state.read(query, "lr", float, 1e-3), min=0, step="any"),
                     html.Div(id=ids.FT_LR_WARNING, className="field-warning"),
                 ]), "sparse runs and LoRA"),
                 labelled("Data", dcc.RadioItems(id=ids.FT_DATA, options=[{"label": v, "value": k} for k, v in DATA.items()], value=data)),
                 labelled("Recompute activations", dcc.RadioItems(id=ids.FT_CHECKPOINT, options=[{"label": v, "value": k} for k, v in CHECKPOINT.items()], value=checkpoint),
                          "in the backward pass: less memory, slower steps"),
                 labelled("Processes", dcc.Input(id=ids.FT_PROCESSES, type="number", value=url_state.read(query, "processes", int, None), min=1, max=64, step=1, placeholder="auto"),
                          "data-parallel run processes; empty: one per GPU, one on CPU"),
                 labelled("Shard the model", dcc.Checklist(id=ids.FT_SHARD, options=[{"label": "FSDP2 over the processes", "value": "fsdp"}],
                                                           value=url_state.listed(query, "shard", [])),
                          "for a model larger than one device: trains the mask alone, on Linear weights"),
             ], className="controls"),
             dcc.Upload(id=ids.FT_UPLOAD, children=html.Div("Drop a UTF-8 text file (passages split at blank lines), or click to choose"), className="upload"),
             html.Div(id=ids.FT_UPLOAD_NAME, className="hint"),
             task_upload.upload_block("ft"),
             html.Div([
                 html.Button("Start fine-tune", id=ids.FT_START, className="button primary", n_clicks=0),
                 html.Button("Cancel", id=ids.FT_CANCEL, className="button danger", n_clicks=0),
             ], className="buttons")),
        spinner(html.Div(id=ids.FT_MESSAGE)),
        card("Progress", html.Div(id=ids.FT_PROGRESS), html.Div(id=ids.FT_STATUS)),
        card("Jobs on the server", spinner(html.Div(id=JOB_MESSAGE)), html.Div(id=ids.FT_JOBS, className="table-scroll")),
        html.Div(id=ids.FT_RESULTS),
        spinner(html.Div(id=ids.FT_APPLY_MESSAGE)),
        html.Div([
            html.Div(graph(ids.FT_LOSS, figures.empty_figure("Start a run to see its loss."), "training-loss"), className="half"),
            html.Div(graph(ids.FT_OUTLIERS, figures.empty_figure(""), "outliers-before-after-fine-tuning"), className="half"),
        ], className="row"),
        card("Earlier runs", html.Div(id=ids.FT_RUNS, className="table-scroll")),
    ])


@dash.callback(Output(ids.FT_BASELINES, "options"), Input(ids.VOCAB, "data"))
def offer_baselines(vocab: dict | None):
    if not vocab:
        return no_update
    return options({name: method for name, method in vocab["methods"].items() if method["baseline"]})


@dash.callback(Output(ids.FT_MASK, "children"), Input(ids.MASK, "data"))
def show_mask(mask: dict | None):
    if not mask:
        return note(["No mask yet: build one on the ", dcc.Link("Selection", href="/selection"), " page."])
    return html.Div(f"Mask {mask_line(mask)}", className="mask-line")


@dash.callback(Output(TASK, "data"), Output(f"{TASK}-info", "children"), Input(f"{TASK}-upload", "contents"), State(f"{TASK}-upload", "filename"),
               prevent_initial_call=True)
def upload_task(contents: str | None, filename: str | None):
    return task_upload.send(contents, filename)


@dash.callback(Output(ids.FT_UPLOAD_NAME, "children"), Input(ids.FT_UPLOAD, "filename"))
def show_upload(filename: str | None):
    return f"Chosen: {filename} (select “my text file” to train on it)" if filename else None


def _uploaded_text(contents: str | None) -> str | None:
    if not contents:
        return None
    try:
        return base64.b64decode(contents.split(",", 1)[1]).decode("utf-8")
    except (IndexError, binascii.Error, UnicodeDecodeError):
        return None


@dash.callback(
    Output(ids.JOB, "data"), Output(ids.FT_MESSAGE, "children"),
    Input(ids.FT_START, "n_clicks"), Input(ids.FT_CANCEL, "n_clicks"),
    State(ids.MASK, "data"), State(ids.FT_BASELINES, "value"), State(ids.FT_STEPS, "value"), State(ids.FT_LR, "value"),
    State(ids.FT_DATA, "value"), State(ids.FT_UPLOAD, "contents"), State(ids.FT_CHECKPOINT, "value"), State(ids.JOB, "data"),
    State(ids.FT_PROCESSES, "value"), State(ids.MODEL, "data"), State(TASK, "data"), State(ids.FT_SHARD, "value"),
    running=[(Output(ids.FT_START, "disabled"), True, False)],  # one launch at a time: a second click while the first is pending does nothing
    prevent_initial_call=True,
)
def start_or_cancel(_s, _c, mask: dict | None, baselines: list[str], steps: int | None, lr: float | None, data: str, contents: str | None,
                    checkpoint: str, job: dict | None, processes: int | None = None, model: dict | None = None, task: dict | None = None,
                    shard: list[str] | None = None):
    action = user_action()
    if action is None:
        return no_update, no_update
    if action == ids.FT_CANCEL:
        return no_update, cancelled(job)
    job, message = started(mask, baselines, steps, lr, data, contents, checkpoint, processes, task, shard)
    if isinstance(job, dict):
        inputs = {"mask_id": mask["id"], "mask_name": mask["name"], "steps": int(steps), "lr": float(lr), "baselines": baselines or [], "data": data, "job": job["id"]}
        record("run", f"fine-tune of {mask['name']}: {int(steps)} steps, lr {float(lr):g}, baselines {', '.join(baselines or []) or 'none'}", model, inputs, {"job": job["id"]})
    return job, message


def cancelled(job: dict | None) -> html.Div:
    """What the cancel button did, in words."""
    if not job:
        return problem_box("No job to cancel.")
    try:
        status = api().cancel_job(job["id"])
    except ApiProblem as problem:
        return problem_box(problem, "cancel the job")
    return note(f"Cancel asked: the job is {status['state']}; a running job stops at its next step.")


def started(mask: dict | None, baselines: list[str], steps: int | None, lr: float | None, data: str, contents: str | None, checkpoint: str,
            processes: int | None = None, task: dict | None = None, shard: list[str] | None = None) -> tuple:
    """(the job to follow, what happened) after the start button, or (no_update, why not)."""
    if not mask:
        return no_update, problem_box("Build or pick a mask on the Selection page first.")
    refusal = form_refusal(steps, lr)
    if refusal:
        return no_update, problem_box(refusal)
    text = _uploaded_text(contents) if data == "upload" else None
    if data == "upload" and not text:
        return no_update, problem_box("data: choose a UTF-8 text file first")
    if data == "task" and not task:
        return no_update, problem_box("data: upload a JSONL task file first")
    source = {"upload": "prose", "task": (task or {}).get("id")}.get(data, data)  # a text upload travels as data_text
    try:
        status = api().start_finetune(mask["id"], baselines or [], int(steps), float(lr), data=source, data_text=text,
                                      checkpoint=checkpoint, processes=int(processes) if processes else None, shard=(shard or [None])[0])
    except ApiProblem as problem:
        return no_update, problem_box(problem, "start the fine-tune")
    return {"id": status["id"]}, note(f"Started job {status['id']}; its progress follows below.{lr_warning(lr) or ''}", "ok")


def form_refusal(steps: float | None, lr: float | None) -> str | None:
    """Why the form cannot start a run, in words; None when it can."""
    if steps is None or steps < 1 or steps != int(steps):
        return f"steps: give a whole number of steps, 1 or more{f' (not {steps:g})' if steps is not None else ''}"
    if lr is None or lr <= 0:
        return "learning rate: give a number above 0"
    return None


def lr_warning(lr: float | None) -> str | None:
    """A word about a learning rate far outside the usual range (the run still starts)."""
    if lr is None or lr <= 0 or USUAL_LR[0] <= lr <= USUAL_LR[1]:
        return None
    side = "above" if lr > USUAL_LR[1] else "below"
    return f" Learning rate {lr:g} is far {side} the usual range ({USUAL_LR[0]:g} to {USUAL_LR[1]:g}): the run will likely {'diverge' if side == 'above' else 'change nothing'}."


@dash.callback(Output(ids.FT_LR_WARNING, "children"), Input(ids.FT_LR, "value"))
def warn_lr(lr: float | None):
    return (lr_warning(lr) or "").strip() or None


def progress_view(status: dict) -> list:
    share = status["step"] / status["total"] if status["total"] else 0.0
    if status["state"] == "done":
        share = 1.0
    bar = html.Div(html.Div(className=f"progress-bar {status['state']}", style={"width": f"{share:.1%}"}), className="progress",
                   role="progressbar", **{"aria-valuenow": f"{share * 100:.0f}", "aria-valuemin": "0", "aria-valuemax": "100"})
    parts = [f"{status['state']}", step_line(status)]
    if status.get("phase"):
        parts.append(status["phase"])
    if status.get("loss") is not None:
        parts.append(f"loss {status['loss']:.4f}")
    if status.get("tokens_per_s"):
        parts.append(f"{status['tokens_per_s']:,.0f} tokens/s")
    if status.get("eta_s") is not None and status["state"] == "running":
        parts.append(f"about {status['eta_s']:.0f} s left")
    text = html.Div(" · ".join(parts), id="ft-state", **{"data-state": status["state"]})
    return [bar, text] + ([ended_box(status)] if status.get("error") else [])


def step_line(status: dict) -> str:
    """'step 13 of 20 in all (2 runs × 10 steps: mask, random)': the count spans the mask's run and every baseline's."""
    params = status.get("params") or {}
    runs = ["mask", *params.get("baselines", [])]
    steps = params.get("steps")
    if len(runs) > 1 and steps and status["total"] == steps * len(runs):
        return f"step {status['step']} of {status['total']} in all ({len(runs)} runs × {steps} steps: {', '.join(runs)})"
    return f"step {status['step']} of {status['total']}"


def ended_box(status: dict) -> html.Div:
    """Why a job failed, or why it was cancelled when nobody pressed Cancel (a server shutdown)."""
    lead = {"cancelled": "Cancelled: ", "failed": "Failed: "}.get(status["state"], "")
    return problem_box(lead + status["error"])


def apply_button(run_id: str, method: str, table_name: str) -> html.Button:
    """`table_name` keeps ids unique: the tab's results and the earlier runs can list the same run."""
    return html.Button("Apply", id={"type": ids.FT_APPLY, "run": run_id, "method": method, "table": table_name}, className="button", n_clicks=0,
                       title="serve base + this run's deltas (switch off, detach or merge them in the bar at the top)")


def results_table(result: dict) -> html.Section:
    run_id = PurePath(result["folder"]).name
    rows = [
        [r["name"], f"{r['trainable']:,}", f"{r['changed']:,}", format_value(r["eval_before"]["perplexity"]), format_value(r["eval_after"]["perplexity"]),
         f"{r['peak_memory_mb']:,.0f}" + (" (recomputed)" if r.get("checkpointing") else ""), f"{r['seconds']:.1f}", apply_button(run_id, r["method"], "results") if r.get("deltas") else ""]
        for r in result["runs"]
    ]
    columns = ["run", "trainable", "changed", "eval ppl before", "eval ppl after", "peak memory (MB)", "train time (s)", "served model"]
    data = result.get("data", {})
    about = f"{result['config']['steps']} steps, lr {result['config']['lr']:g}, data: {data.get('source', '?')}"
    return card("Results", note(about), table(columns, rows, class_name="results-table"))


@dash.callback(
    Output(ids.FT_PROGRESS, "children"), Output(ids.FT_STATUS, "children"), Output(ids.FT_POLL, "disabled"), Output(ids.FT_LIVE, "data"),
    Output(ids.FT_RESULTS, "children"), Output(ids.FT_LOSS, "figure"), Output(ids.FT_OUTLIERS, "figure"),
    Input(ids.FT_POLL, "n_intervals"), Input(ids.JOB, "data"), Input(ids.MODEL, "data"), State(ids.FT_LIVE, "data"),
)
def follow_job(_n, job: dict | None, model: dict | None, live: dict | None):
    if not job:
        return note("No job in this tab yet."), None, True, None, None, figures.empty_figure("Start a run to see its loss."), figures.empty_figure("")
    try:
        status = api().job(job["id"])
    except ApiProblem as problem:
        waiting = problem.kind in ("unreachable", "timeout")  # keep polling through a restart of the API
        return no_update, problem_box(problem if model else WAITING, "follow the job"), not waiting, no_update, no_update, no_update, no_update
    live = {"job": job["id"], "points": live_points(live, job["id"], status)}
    if status["state"] in ACTIVE:
        loss = figures.live_loss(live["points"]) if live["points"] else figures.empty_figure("Waiting for the first step…")
        return progress_view(status), None, False, live, no_update, loss, no_update
    message, results, loss, outliers = finished_views(job["id"], status)
    return progress_view(status), message, True, live, results, loss, outliers


def live_points(live: dict | None, job_id: str, status: dict) -> list[list]:
    """The job's loss points so far, with the status's step added when it is a new one."""
    points = live["points"] if live and live.get("job") == job_id else []
    if status["loss"] is not None and (not points or points[-1][0] != status["step"]):
        points = points + [[status["step"], status["loss"], status.get("phase") or ""]]
    return points


def finished_views(job_id: str, status: dict) -> tuple:
    """(message, results table, loss curves, outlier shift) of a job that stopped; only a done job has results."""
    if status["state"] != "done":
        return None, None, no_update, no_update
    try:
        result = api().job_result(job_id)
    except ApiProblem as problem:
        return problem_box(problem, "read the results"), None, no_update, no_update
    return None, results_table(result), figures.loss_curves(result["runs"]), figures.outlier_shift(result["outliers_before"], result["runs"])


@dash.callback(Output(ids.FT_RUNS, "children"), Input(ids.MODEL, "data"), Input(ids.FT_RESULTS, "children"))
def list_runs(model: dict | None, _results):
    if not model:
        return note(WAITING)
    try:
        runs = api().runs()["runs"]
    except ApiProblem as problem:
        return problem_box(problem, "list the runs")
    if not runs:
        return note("No runs yet.")
    rows = [
        [r["id"], r.get("mask") or "", run["name"], f"{run['trainable']:,}", format_value(run["eval_before"]["perplexity"]), format_value(run["eval_after"]["perplexity"]),
         apply_button(r["id"], run["method"], "runs") if run.get("deltas") else ""]
        for r in runs for run in r["runs"]
    ]
    return table(["run folder", "mask", "method", "trainable", "ppl before", "ppl after", "served model"], rows)


@dash.callback(
    Output(ids.HEALTH, "data", allow_duplicate=True), Output(ids.FT_APPLY_MESSAGE, "children"),
    Input({"type": ids.FT_APPLY, "run": ALL, "method": ALL, "table": ALL}, "n_clicks"), State(ids.HEALTH, "data"),
    prevent_initial_call=True,
)
def apply_run(_clicks: list[int], health: dict | None):
    """Attach the clicked run's deltas to the served model; the answer goes into the health store,
    so the shell's bar shows it and every page redraws on base + deltas."""
    target = user_action()
    if not isinstance(target, dict):
        return no_update, no_update
    try:
        applied = api().apply_run(target["run"], target["method"])["applied"]
    except ApiProblem as problem:
        return no_update, problem_box(problem, f"apply {target['run']}/{target['method']}")
    done = f"The served model now computes base + the deltas of {applied['name']} ({applied['run']}/{applied['method']}) on every page."
    return {**(health or {}), "deltas": applied}, note(done, "ok")


view_in_url("/finetune", ids.FT_QUERY, {
    "baselines": Input(ids.FT_BASELINES, "value"), "steps": Input(ids.FT_STEPS, "value"), "lr": Input(ids.FT_LR, "value"), "data": Input(ids.FT_DATA, "value"),
    "checkpoint": Input(ids.FT_CHECKPOINT, "value"), "processes": Input(ids.FT_PROCESSES, "value"),
    "shard": Input(ids.FT_SHARD, "value"),
})


@dash.callback(
    Output(ids.FT_JOBS, "children"), Output(JOBS_SEEN, "data"),
    Input(JOBS_POLL, "n_intervals"), Input(ids.JOB, "data"), Input(ids.MODEL, "data"), State(JOBS_SEEN, "data"),
)
def list_jobs(_n, job: dict | None, model: dict | None, seen: dict | None):
    """Every job the server holds, each with follow and cancel: none is out of reach from this page."""
    try:
        jobs = api().jobs()["jobs"]
    except ApiProblem as problem:
        return problem_box(problem, "list the jobs"), None
    shown = {"following": (job or {}).get("id"), "jobs": [[j["id"], j["state"], j["step"], j["total"]] for j in jobs]}
    if shown == seen:
        return no_update, no_update
    if not jobs:
        return note("No jobs yet."), shown
    return jobs_table(jobs, shown["following"]), shown


def jobs_table(jobs: list[dict], following: str | None) -> html.Table:
    rows, css = [], []
    for j in jobs:
        params = j.get("params") or {}
        buttons = [html.Button("Follow", id={"type": JOB_BUTTON, "job": j["id"], "action": "follow"}, className="button", n_clicks=0, disabled=j["id"] == following)]
        if j["state"] in ACTIVE:
            buttons.append(html.Button("Cancel job", id={"type": JOB_BUTTON, "job": j["id"], "action": "cancel"}, className="button danger", n_clicks=0))
        rows.append([j["id"], j["state"], f"{j['step']} / {j['total']}", params.get("mask_name", ""), html.Div(buttons, className="buttons")])
        css.append("following" if j["id"] == following else j["state"])
    return table(["job", "state", "steps", "mask", ""], rows, class_name="jobs-table", row_ids=css)


@dash.callback(
    Output(ids.JOB, "data", allow_duplicate=True), Output(JOB_MESSAGE, "children"),
    Input({"type": JOB_BUTTON, "job": ALL, "action": ALL}, "n_clicks"),
    prevent_initial_call=True,
)
def job_button(_clicks: list[int]):
    """Follow a job here (its progress and results above), or cancel it."""
    target = user_action()
    if not isinstance(target, dict):
        return no_update, no_update
    if target["action"] == "follow":
        return {"id": target["job"]}, None
    return no_update, cancelled({"id": target["job"]})
