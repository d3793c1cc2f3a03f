"""The workbench as a researcher lives in it, in a real headless Chromium against the real API
and UI processes (the servers and the browser of tests/test_ui_browser.py): results that always
belong to the prompt shown, state that survives a reload and lives in the URL, jobs that cannot
be launched twice, masks that can be merged, undone and deleted, the model picker, views that
hold up on long prompts, and figures that export for a paper.
"""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import Page, expect

from tests.test_ui_browser import (  # noqa: F401  (fixtures, used by name)
    browser,
    go,
    page,
    tiny_stack,
    use_prompt,
    wait_for_stack,
    workdir,
)

SUMMER = "Summer is hot. Winter is"  # 24 byte tokens, 25 with BOS


def test_a_new_prompt_drops_what_no_longer_fits_and_shows_only_its_own_results(tiny_stack, page: Page) -> None:
    api, ui = tiny_stack
    page.goto(ui.url + "/layer?layer=1&position=30&dim=5")  # the default prompt is far longer than 30 bytes
    expect(page.locator("#lx-selected")).to_contain_text("position 30")
    page.get_by_role("button", name="Zero", exact=True).click()
    wait_for_stack(page, "pos 30 dim 5: zero")
    long_tokens = re.search(r"(\d+) tokens", page.locator("#lx-numbers").inner_text()).group(1)

    use_prompt(page, SUMMER)
    expect(page.locator("#prompt-dropped")).to_contain_text("L1 resid_post pos 30 dim 5: zero")
    expect(page.locator("#lx-stack")).to_contain_text("No interventions yet")
    expect(page.locator("#lx-numbers")).to_have_count(0)  # the long prompt's perplexity is gone with it
    expect(page.locator("#lx-predictions")).to_be_empty()
    expect(page.locator("#lx-selected")).to_contain_text("Click a cell")
    expect(page.locator("#lx-heatmap .yaxislayer-above .ytick")).to_have_count(25)  # the new prompt's rows

    # A new intervention works at once, and its numbers are the short prompt's.
    page.goto(ui.url + "/layer?layer=1&position=3&dim=5")
    page.get_by_role("button", name="Zero", exact=True).click()
    wait_for_stack(page, "pos 3 dim 5: zero")
    expect(page.locator("#lx-numbers")).to_contain_text("24 tokens")  # 25 positions predict 24
    assert long_tokens != "24"


def test_results_follow_a_prompt_change_when_the_stack_still_fits(tiny_stack, page: Page) -> None:
    api, ui = tiny_stack
    page.goto(ui.url + "/layer?layer=1&position=2&dim=5")
    page.get_by_role("button", name="Zero", exact=True).click()
    wait_for_stack(page, "pos 2 dim 5: zero")
    use_prompt(page, SUMMER)
    expect(page.locator("#lx-numbers")).to_contain_text("24 tokens")  # 25 positions predict 24  # evaluated again, on the prompt shown
    body = {"text": SUMMER, "interventions": [{"layer": 1, "site": "resid_post", "position": 2, "dim": 5, "mode": "zero"}]}
    intervened = httpx.post(api.url + "/api/intervene", json=body, timeout=120).json()["intervened"]["perplexity"]
    shown = float(page.locator("#lx-numbers .value").nth(1).inner_text().replace(",", ""))
    assert abs(shown - intervened) <= 1e-3 * intervened


def test_one_item_of_the_stack_can_be_removed(tiny_stack, page: Page) -> None:
    api, ui = tiny_stack
    page.goto(ui.url + "/layer?layer=1&position=2&dim=5")
    page.get_by_role("button", name="Zero", exact=True).click()
    wait_for_stack(page, "pos 2 dim 5: zero")
    page.goto(ui.url + "/layer?layer=1&position=3&dim=6")
    page.get_by_role("button", name="Zero", exact=True).click()
    wait_for_stack(page, "pos 3 dim 6: zero")
    expect(page.locator("#lx-stack li")).to_have_count(2)
    page.locator("#lx-stack li", has_text="pos 2 dim 5").get_by_role("button").click()
    expect(page.locator("#lx-stack li")).to_have_count(1)
    expect(page.locator("#lx-stack")).to_contain_text("pos 3 dim 6: zero")
    expect(page.locator("#lx-numbers")).to_be_visible()  # the rest evaluated again
