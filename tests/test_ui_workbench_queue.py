"""One model, many tabs, in a real headless Chromium against real API and UI processes: while one
tab's evaluation scores the bundled prose window by window, another tab's evaluation waits its
turn between those windows and the other tab shows where it stands in line, behind what, and how
far the first evaluation is; each tab can cancel its own evaluation and only its own.

On SmolLM2, so that the first evaluation's windows (512 tokens, about a second each on two
cores) keep the second tab waiting across many of its one-second status polls: on the tiny
model a window took ~60 ms, the second's waits fell between polls, and the test failed about
one run in three.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.test_ui_browser import (  # noqa: F401  (fixtures, used by name)
    Server,
    _stack,
    browser,
    page,
    workdir,
)

ZERO_ON_PROSE = "/layer?layer=1&position=3&dim=5&eval=prose"
OWN = re.compile(r"Your evaluation of bundled prose: window \d+ of (\d+)")


def waiting_behind(windows: str) -> re.Pattern:
    return re.compile(rf"Waiting for the model: 1st in line behind an evaluation of bundled prose from another tab, window \d+ of {windows}\.")


@pytest.fixture(scope="module")
def long_eval_stack(workdir: Path) -> Iterator[tuple[Server, Server]]:
    yield from _stack(workdir, "smollm2-135m", "queue", {"OUTLIER_LAB_MAX_TOKENS": "512", "OUTLIER_LAB_MAX_EVAL_TOKENS": "20000"})


def zero_on_prose(tab: Page, ui: Server) -> None:
    tab.goto(ui.url + ZERO_ON_PROSE)
    expect(tab.locator("#lx-heatmap .heatmaplayer image")).to_be_attached()
    tab.get_by_role("button", name="Zero", exact=True).click()


@pytest.mark.real
def test_a_second_tab_sees_its_place_in_line_behind_the_first_tabs_evaluation_and_cancels_its_own(long_eval_stack, page: Page) -> None:
    api, ui = long_eval_stack
    first, second = page, page.context.new_page()
    zero_on_prose(first, ui)
    expect(first.locator("#queue-bar")).to_contain_text(OWN)
    expect(first.get_by_role("button", name="Cancel my evaluation")).to_be_visible()
    windows = OWN.search(first.locator("#queue-bar").inner_text()).group(1)

    zero_on_prose(second, ui)
    expect(second.locator("#queue-bar")).to_contain_text(waiting_behind(windows))  # between the first's windows, the second's wait their turn
    expect(second.locator("#queue-bar")).to_contain_text(OWN)
    second.get_by_role("button", name="Cancel my evaluation").click()
    expect(second.locator("#lx-intervene-message")).to_contain_text("the evaluation was cancelled")
    expect(second.locator("#lx-numbers .value")).to_have_count(0)

    expect(first.locator("#queue-bar")).to_contain_text(OWN)  # the first tab's evaluation goes on
    expect(first.locator("#lx-numbers .value")).to_have_count(3, timeout=300_000)
    expect(first.locator("#queue-bar")).to_be_hidden()
    expect(second.locator("#queue-bar")).to_be_hidden()
    with httpx.Client(base_url=api.url, timeout=5.0) as client:
        assert client.get("/api/queue").json() == {"holder": None, "waiting": [], "works": [], "position": None}
