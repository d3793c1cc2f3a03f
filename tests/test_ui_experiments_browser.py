"""The Experiments page in a real headless Chromium, against the real API and UI as
processes on the tiny model (the servers and the browser as tests/test_ui_browser.py runs
them): launch a sweep, watch its trials, read the summary table, see the Pareto plot, and
put a second sweep beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

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
