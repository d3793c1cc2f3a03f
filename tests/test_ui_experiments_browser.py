"""The Experiments page in a real headless Chromium, against the real API and UI as
processes on the tiny model (the servers and the browser as tests/test_ui_browser.py runs
them): launch a sweep, watch its trials, read the summary table, see the Pareto plot, and
put a second sweep beside it; upload a task file (a bad line named on the page) and run a
sweep on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.test_ui_browser import Server, _stack, browser, go, page, shoot, workdir  # noqa: F401 - fixtures used by name

SWEEP_MS = 600_000  # a trial is a process that loads the model and runs lm-eval, on two shared cores


@pytest.fixture(scope="module")
def stack(workdir: Path) -> Iterator[tuple[Server, Server]]:  # noqa: F811 - the imported fixture, used by name
    yield from _stack(workdir, "tiny-random")


def launch(page: Page, seeds: str) -> None:  # noqa: F811 - the fixture's name, a plain argument here
    page.locator("#ex-budgets").fill("64")
    page.locator("#ex-seeds").fill(seeds)
    page.locator("#ex-steps").fill("2")
    page.locator("#ex-eval-limit").fill("4")
    page.get_by_role("button", name="Launch sweep", exact=True).click()
    expect(page.locator("#ex-message")).to_contain_text("Sweep sweep-")


def test_launch_watch_read_the_table_and_compare_two_sweeps(stack, page: Page) -> None:  # noqa: F811
    _, ui = stack
    page.goto(ui.url + "/")
    go(page, "Experiments")
    expect(page.locator("#ex-methods input[value='ln_top']")).to_be_attached()  # the methods come from the API's vocabulary
    launch(page, "0")
    left = page.locator("#ex-left-view")
    expect(left.locator(".trials-table tbody tr")).to_have_count(2)  # mask and random, seed 0
    expect(left.locator(".sweep-state")).to_have_attribute("data-state", "running")
    shoot(page, "experiments-running")
    expect(left.locator(".sweep-state")).to_have_attribute("data-state", "done", timeout=SWEEP_MS)
    summary = left.locator(".summary-table table")
    expect(summary.locator("th").filter(has_text="(95% CI)").first).to_be_visible()
    expect(summary.locator("tbody tr")).to_have_count(2)
    expect(summary.locator("tbody")).to_contain_text("mask")
    expect(summary.locator("tbody")).to_contain_text("random")
    expect(left.locator(".sweep-pareto .js-plotly-plot").first).to_be_visible()
    expect(left.locator(".sweep-pareto .scatterlayer .trace").first).to_be_attached()
    first = left.locator(".sweep-state").inner_text().split(" · ")[0]

    launch(page, "1")  # a second sweep becomes the left pane; the first goes to the right one
    expect(left.locator(".sweep-state")).not_to_contain_text(first)
    page.locator("#ex-right").click()
    page.get_by_role("option").filter(has_text=first).click()
    right = page.locator("#ex-right-view")
    expect(right.locator(".sweep-state")).to_contain_text(first)
    expect(right.locator(".summary-table tbody tr")).to_have_count(2)
    expect(left.locator(".sweep-state")).to_have_attribute("data-state", "done", timeout=SWEEP_MS)
    expect(page.locator(".sweep-pareto .js-plotly-plot")).to_have_count(4)  # two plots per pane, side by side
    shoot(page, "experiments-side-by-side")


def task_file(n: int) -> bytes:
    return "".join(json.dumps({"prompt": f"Item {i} is", "completion": " odd" if i % 2 else " even"}) + "\n" for i in range(n)).encode()


def drop(page: Page, zone: str, name: str, content: bytes) -> None:  # noqa: F811 - the fixture's name, a plain argument here
    page.locator(f"#{zone} input[type=file]").set_input_files(files=[{"name": name, "mimeType": "application/x-ndjson", "buffer": content}])


def test_an_uploaded_task_file_is_checked_and_a_sweep_trains_on_it(stack, page: Page, workdir: Path) -> None:  # noqa: F811
    api, ui = stack
    page.goto(ui.url + "/")
    go(page, "Fine-tune")  # the fine-tune page takes the same upload, checked the same way
    drop(page, "ft-task-upload", "broken.jsonl", b'{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": \n')
    expect(page.locator("#ft-task-info [role=alert]")).to_contain_text("broken.jsonl line 2 is not JSON")
    drop(page, "ft-task-upload", "parity.jsonl", task_file(15))
    expect(page.locator("#ft-task-info")).to_contain_text("Uploaded parity.jsonl: 15 rows, 12 to train on and 3 held out")
    expect(page.locator("#ft-data input[value='task']")).to_be_attached()

    go(page, "Experiments")
    drop(page, "ex-task-upload", "parity.jsonl", task_file(15))
    expect(page.locator("#ex-task-info")).to_contain_text("Uploaded parity.jsonl: 15 rows, 12 to train on and 3 held out")
    page.locator("#ex-data input[value='upload']").check()
    expect(page.locator("#ex-methods input[value='random']")).to_be_attached()
    page.locator("#ex-methods input[value='random']").uncheck()
    launch(page, "0")
    left = page.locator("#ex-left-view")
    expect(left.locator(".sweep-state")).to_contain_text("parity.jsonl")
    expect(left.locator(".sweep-state")).to_have_attribute("data-state", "done", timeout=SWEEP_MS)
    expect(left.locator(".summary-table th").filter(has_text="held_out_loss (95% CI)")).to_be_visible()  # no lm-eval task: judged on held-out loss
    expect(left.locator(".summary-table tbody tr")).to_have_count(1)
    sweep_id = left.locator(".sweep-state").inner_text().split(" · ")[0]

    sweep = httpx.get(f"{api.url}/api/sweeps/{sweep_id}", timeout=30).json()
    uploads = workdir / "runs-tiny-random" / "task_data"
    assert Path(sweep["config"]["data"]) == next(uploads.glob("task-*/parity.jsonl")).resolve()
    [trial] = sweep["trial_views"]
    result = json.loads((workdir / "runs-tiny-random" / "sweeps" / trial["folder"] / "result.json").read_text())
    assert (result["data"]["source"], result["data"]["train_blocks"], result["data"]["held_out_blocks"]) == ("parity.jsonl", 12, 3)  # a fifth of 15 held out
