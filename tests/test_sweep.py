"""`outlier-lab sweep` end to end on the tiny model: each trial a run process, the summary
over seeds checked by hand, a second invocation trains nothing, and a sweep SIGKILLed while
a trial runs resumes and finishes with every trial trained once."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scipy import stats

ROOT = Path(__file__).parents[1]
TINY = ["--model", "tiny-random", "--device", "cpu", "--batch-size", "2", "--held-out", "8", "--eval-limit", "8"]


def sweep(out: Path, *argv: str, timeout: float = 900) -> dict:
    command = [sys.executable, "-m", "app.cli.main", "sweep", *TINY, "--out", str(out), "--json", *argv]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def run_logs(out: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in (out / "trials").glob("*/run.log")}


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sweep")
    return out, sweep(out, "--budgets", "64,256", "--methods", "mask,random", "--seeds", "0,1", "--steps", "2")


def test_the_sweep_trains_each_trial_once_and_prints_the_contract(grid):
    out, payload = grid
    assert payload["state"] == "done"
    trials = payload["trials"]
    assert sorted((t["method"], t["budget"], t["seed"]) for t in trials) == sorted(
        (m, b, s) for m in ("mask", "random") for b in (64, 256) for s in (0, 1)
    )
    for trial in trials:
        assert {"method", "budget", "seed", "trainable", "state", "reused", "metrics"} <= set(trial)
        assert trial["state"] == "done" and trial["reused"] is False and trial["launches"] == 1
        assert trial["trainable"] >= 1 and trial["metrics"]["trainable"] == trial["trainable"]
        assert {"outlier_reviews.acc", "held_out_loss", "peak_memory_mb", "step_s", "tokens_per_s"} <= set(trial["metrics"])
        folder = out / trial["folder"]
        config = json.loads((folder / "run_config.json").read_text())  # the config that replays it
        assert config["methods"] == [trial["method"]] and config["recipe"]["budget"] == trial["budget"] and config["train"]["seed"] == trial["seed"]
        assert json.loads((folder / trial["method"] / "lm_eval.json").read_text())["samples"] == {"outlier_reviews": 8}


def test_the_summary_is_the_mean_and_t_interval_of_the_trials(grid):
    out, payload = grid
    for row in payload["summary"]:
        assert {"method", "budget", "metric", "n", "mean", "ci_low", "ci_high"} <= set(row)
        group = [t for t in payload["trials"] if (t["method"], t["budget"]) == (row["method"], row["budget"])]
        values = [t["metrics"][row["metric"]] for t in group if row["metric"] in t["metrics"]]
        # the base model is scored once, in the sweep's first trial (it is the same for every trial)
        assert row["n"] == len(values) == (1 if row["metric"].startswith("base.") and len(values) == 1 else 2)
        assert row["mean"] == pytest.approx(statistics.mean(values))
        if len(values) == 1:
            assert row["ci_low"] is None and row["ci_high"] is None  # one value has no interval
            continue
        spread = statistics.stdev(values) / len(values) ** 0.5
        if spread == 0:
            assert row["ci_low"] == row["ci_high"] == pytest.approx(row["mean"])
        else:
            low, high = stats.t.interval(0.95, len(values) - 1, loc=statistics.mean(values), scale=spread)
            assert (row["ci_low"], row["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    files = payload["files"]
    assert {"csv", "json", "markdown", "pareto_trainable.png", "pareto_trainable.svg", "pareto_peak_memory_mb.png", "pareto_peak_memory_mb.svg"} <= set(files)
    assert Path(files["csv"]).read_text().splitlines()[0] == "method,budget,setting,metric,n,mean,std,ci_low,ci_high"
    assert "(95% CI)" in Path(files["markdown"]).read_text()
    assert Path(files["pareto_trainable.png"]).read_bytes()[:4] == b"\x89PNG" and b"<svg" in Path(files["pareto_trainable.svg"]).read_bytes()[:400]
    assert json.loads(Path(files["json"]).read_text())["summary"] == payload["summary"]


def test_a_second_invocation_trains_nothing(grid):
    out, first = grid
    logs = run_logs(out)
    again = sweep(out, "--budgets", "64,256", "--methods", "mask,random", "--seeds", "0,1", "--steps", "2", "--no-plots", timeout=120)
    assert again["sweep"] == first["sweep"] and again["state"] == "done"
    assert all(t["reused"] is True and t["launches"] == 1 for t in again["trials"])
    assert [t["metrics"] for t in again["trials"]] == [t["metrics"] for t in first["trials"]]
    assert run_logs(out) == logs  # no run process wrote anything
    assert again["summary"] == first["summary"]


def _running_trial(db: Path) -> tuple[str, str] | None:
    """(key, folder) of a trial whose run process is training now."""
    if not db.is_file():
        return None
    with sqlite3.connect(db) as con:
        row = con.execute("SELECT key, folder FROM trials WHERE state = 'running'").fetchone()
    if row is None:
        return None
    status = db.parent / row[1] / "status.json"
    try:
        training = json.loads(status.read_text()).get("step", 0) >= 1
    except (OSError, ValueError):
        return None
    return row if training else None


def test_a_sweep_killed_mid_trial_resumes_and_trains_each_trial_once(tmp_path):
    argv = ["--budgets", "64", "--methods", "random", "--seeds", "0,1", "--steps", "40", "--no-plots"]
    command = [sys.executable, "-m", "app.cli.main", "sweep", *TINY, "--out", str(tmp_path), "--json", *argv]
    driver = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    running = None
    while running is None and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.2)
        running = _running_trial(tmp_path / "sweeps.sqlite")
    assert running is not None, "no trial was seen training"
    os.kill(driver.pid, signal.SIGKILL)  # the sweep dies; its trial's run process lives in a session of its own
    driver.wait(timeout=30)
    with sqlite3.connect(tmp_path / "sweeps.sqlite") as con:
        assert con.execute("SELECT state FROM trials WHERE key = ?", (running[0],)).fetchone() == ("running",)
    resumed = sweep(tmp_path, *argv)
    assert resumed["state"] == "done"
    assert [(t["state"], t["launches"]) for t in resumed["trials"]] == [("done", 1), ("done", 1)]
    killed = next(t for t in resumed["trials"] if t["key"] == running[0])
    assert killed["reused"] is False and len(json.loads((tmp_path / running[1] / "result.json").read_text())["runs"][0]["train_loss"]) == 40
