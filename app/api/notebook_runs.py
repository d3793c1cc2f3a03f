"""A fine-tune's entry in the lab notebook gets the run's final numbers once its job has ended.

The entry is written at launch with the job's id. Whenever a notebook is read, each of its run
entries whose job has ended since is completed from the job's status and its result (the
comparison the run process wrote) and stored so: the state, why it stopped, the run's id (its
folder under RUNS_DIR), its config, and per method the last training loss and the held-out
loss and perplexity after, with the base model's before. A job deleted before that stays as it was.
"""

from __future__ import annotations

import logging
from pathlib import Path

from app.api.notebook_store import NotebookRow, NotebookStore
from outlier_core.errors import InputError
from outlier_core.tune.jobs import FINISHED, JobRunner, JobStatus

log = logging.getLogger(__name__)

FINAL = "final"  # the results key that holds a run's final numbers


def job_of(row: NotebookRow) -> str | None:
    if row.kind != "run" or FINAL in row.results:
        return None
    job = row.inputs.get("job") or row.results.get("job")
    return job if isinstance(job, str) else None


def final_numbers(status: JobStatus, result: dict | None) -> dict:
    """What an ended job came to: its state and last step, and from its result the run and its losses."""
    final: dict = {"state": status.state, "error": status.error, "step": status.step, "total": status.total, "last_loss": status.loss}
    if result is None:
        return final
    return {
        **final,
        "run_id": Path(result["folder"]).name,
        "config": result["config"],
        "eval_before": result["eval_before"],
        "runs": [
            {"name": r["name"], "method": r["method"], "trainable": r["trainable"],
             "final_loss": r["train_loss"][-1] if r["train_loss"] else None, "eval_after": r["eval_after"]}
            for r in result["runs"]
        ],
    }


def with_final_numbers(store: NotebookStore, runner: JobRunner | None, rows: list[NotebookRow]) -> list[NotebookRow]:
    """`rows`, each run entry whose job has ended completed (and stored) with the final numbers."""
    if runner is None:
        return rows
    completed = []
    for row in rows:
        job = job_of(row)
        if job is not None:
            row = _completed(store, runner, row, job)
        completed.append(row)
    return completed


def _completed(store: NotebookStore, runner: JobRunner, row: NotebookRow, job: str) -> NotebookRow:
    try:
        status = runner.get(job)
    except InputError:  # deleted, or never this server's
        return row
    if status.state not in FINISHED:
        return row
    try:
        result = runner.result(job)
    except ValueError:  # a result file cut short: the state and the last step still say how it ended
        log.warning("the result of job %s cannot be read back", job)
        result = None
    results = {**row.results, FINAL: final_numbers(status, result)}
    store.set_results(row.id, results)
    return NotebookRow(row.id, row.session, row.created, row.kind, row.title, row.inputs, results)
