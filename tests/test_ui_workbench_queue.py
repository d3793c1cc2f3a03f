"""One model, many tabs, in a real headless Chromium against real API and UI processes: while one
tab's evaluation scores the bundled prose window by window, another tab's evaluation waits its
turn between those windows and the other tab shows where it stands in line, behind what, and how
far the first evaluation is; each tab can cancel its own evaluation and only its own.

The API scores at most 20,000 evaluation tokens here: the bundled prose is ~15,000 byte tokens
on the tiny model, 29 windows of 512, several seconds of work.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.test_ui_browser import (  # noqa: F401  (fixtures, used by name)
    Server,
    _env,
    _stop,
    _wait,
    browser,
    free_port,
    page,
    workdir,
)

ZERO_ON_PROSE = "/layer?layer=1&position=3&dim=5&eval=prose"
WAITING = re.compile(r"Waiting for the model: 1st in line behind an evaluation of bundled prose from another tab, window \d+ of 29\.")
OWN = re.compile(r"Your evaluation of bundled prose: window \d+ of 29")


@pytest.fixture(scope="module")
def long_eval_stack(workdir: Path) -> Iterator[tuple[Server, Server]]:
    env = {**_env(workdir / "runs-queue"), "OUTLIER_LAB_MAX_TOKENS": "512", "OUTLIER_LAB_MAX_EVAL_TOKENS": "20000"}
    api_port, ui_port = free_port(), free_port()
    servers = []
    try:
        for args, port in ((["api", "--model", "tiny-random", "--device", "cpu"], api_port), (["ui", "--api-url", f"http://127.0.0.1:{api_port}"], ui_port)):
            log = workdir / f"queue-{args[0]}.log"
            with log.open("wb") as sink:
                process = subprocess.Popen([sys.executable, "-m", "app.cli.main", *args, "--port", str(port)], env=env, stdout=sink, stderr=subprocess.STDOUT)
            servers.append(Server(f"http://127.0.0.1:{port}", process, log))
        api, ui = servers
        _wait(api, "/api/health", lambda r: r.status_code == 200 and r.json()["ready"])
        _wait(ui, "/", lambda r: r.status_code == 200)
        yield api, ui
    finally:
        for server in servers:
            _stop(server)


def zero_on_prose(tab: Page, ui: Server) -> None:
    tab.goto(ui.url + ZERO_ON_PROSE)
    expect(tab.locator("#lx-heatmap .heatmaplayer image")).to_be_attached()
    tab.get_by_role("button", name="Zero", exact=True).click()


def test_a_second_tab_sees_its_place_in_line_behind_the_first_tabs_evaluation_and_cancels_its_own(long_eval_stack, page: Page) -> None:
    api, ui = long_eval_stack
    first, second = page, page.context.new_page()
    zero_on_prose(first, ui)
    expect(first.locator("#queue-bar")).to_contain_text(OWN)
    expect(first.get_by_role("button", name="Cancel my evaluation")).to_be_visible()

    zero_on_prose(second, ui)
    expect(second.locator("#queue-bar")).to_contain_text(WAITING)  # between the first's windows, the second's wait their turn
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
