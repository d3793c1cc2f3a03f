"""The workbench as a researcher lives in it, in a real headless Chromium against the real API
and UI processes (the servers and the browser of tests/test_ui_browser.py): results that always
belong to the prompt shown, state that survives a reload and lives in the URL, jobs that cannot
be launched twice, masks that can be merged, undone and deleted, the model picker, views that
hold up on long prompts, and figures that export for a paper.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from app.ui.state import DEFAULT_PROMPT, format_perplexity
from tests.test_ui_browser import (  # noqa: F401  (fixtures, used by name)
    _env,
    _stack,
    browser,
    go,
    page,
    tiny_stack,
    wait_for_stack,
    workdir,
)

SUMMER = "Summer is hot. Winter is"  # 24 byte tokens, 25 with BOS
PROMPT_OF_TAB = DEFAULT_PROMPT["text"]  # what a fresh tab runs


def use_prompt(page: Page, text: str) -> None:
    """Run a prompt once the page has shown the tab's own (typing earlier would race the page's first fill)."""
    expect(page.locator("#prompt-text")).not_to_have_value("")
    page.locator("#prompt-text").fill(text)
    page.get_by_role("button", name="Run", exact=True).click()


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
    expect(page.locator("#lx-selected")).to_contain_text("dim 5")  # the link's cell is picked: a press before that has nothing to act on
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
    expect(page.locator("#lx-selected")).to_contain_text("dim 5")  # the link's cell is picked: a press before that has nothing to act on
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


def intervene_calls(api) -> int:
    """How many interventions the API has computed: its access log says."""
    return api.log.read_text(errors="replace").count("POST /api/intervene")


def test_a_reload_keeps_the_results_the_choices_and_puts_them_in_a_url_that_reopens_the_view(tiny_stack, page: Page, browser) -> None:
    api, ui = tiny_stack
    page.goto(ui.url + "/layer?layer=2&position=3&dim=7")
    expect(page.locator("#lx-selected")).to_contain_text("position 3")
    use_prompt(page, SUMMER)
    page.get_by_role("button", name="Zero", exact=True).click()
    wait_for_stack(page, "L2 resid_post pos 3 dim 7: zero")
    expect(page.locator("#lx-numbers")).to_contain_text("24 tokens")
    shown = page.locator("#lx-numbers").text_content()
    computed = intervene_calls(api)

    page.reload()
    expect(page.locator("#lx-numbers")).to_have_text(shown)  # the same numbers, without computing them again
    expect(page.locator("#prompt-text")).to_have_value(SUMMER)
    expect(page.locator("#lx-selected")).to_contain_text("layer 2 · resid_post · position 3")
    page.wait_for_timeout(1500)
    assert intervene_calls(api) == computed

    url = page.url
    assert "stack=2%3Aresid_post%3A3%3A7%3Azero" in url and "prompt=Summer" in url and "sel=2%3Aresid_post%3A3%3A7" in url
    shared = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()  # another person: a fresh session
    try:
        shared.goto(url)
        expect(shared.locator("#prompt-text")).to_have_value(SUMMER)
        expect(shared.locator("#lx-stack")).to_contain_text("L2 resid_post pos 3 dim 7: zero")
        expect(shared.locator("#lx-numbers")).to_have_text(shown)
        expect(shared.locator("#lx-selected")).to_contain_text("layer 2 · resid_post · position 3")
    finally:
        shared.context.close()

    page.get_by_role("button", name="Reset", exact=True).click()
    expect(page.locator("#lx-stack")).to_contain_text("No interventions yet")
    page.get_by_text("bundled prose", exact=True).click()
    expect(page).to_have_url(re.compile(r"eval=prose"))
    page.reload()
    expect(page.locator("#lx-eval input[value=prose]")).to_be_checked()


def test_no_page_logs_an_error_on_load_or_reload(tiny_stack, page: Page) -> None:
    api, ui = tiny_stack
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(ui.url + "/layer?layer=1&position=2&dim=3")
    expect(page.locator("#lx-selected")).to_contain_text("position 2")
    for label in ("Overview", "Attention", "Weights", "Selection", "Fine-tune", "Layer explorer"):
        go(page, label)
        expect(page.locator("#model-status")).to_contain_text("tiny-random")
        page.wait_for_timeout(1500)
        page.reload()
        expect(page.locator("#model-status")).to_contain_text("tiny-random")
        page.wait_for_timeout(1500)
    assert errors == []


def test_every_page_reopens_as_it_was_left_from_the_nav_bar_and_after_a_reload(tiny_stack, page: Page) -> None:
    api, ui = tiny_stack
    page.goto(ui.url + "/attention")
    page.locator("#at-head").click()
    page.get_by_role("option", name="head 1", exact=True).click()
    slider_box = page.locator("#at-layer input[type=number]")
    slider_box.fill("3")
    slider_box.press("Enter")  # the number box commits on Enter, not only on leaving it
    expect(page.locator("#at-pattern .gtitle")).to_contain_text("Layer 3, head 1")

    go(page, "Fine-tune")
    page.locator("#ft-steps").fill("7")
    page.locator("#ft-lr").fill("0.02")
    page.get_by_text("no run", exact=True).click()
    go(page, "Attention")
    expect(page.locator("#at-pattern .gtitle")).to_contain_text("Layer 3, head 1")
    page.reload()
    expect(page.locator("#at-pattern .gtitle")).to_contain_text("Layer 3, head 1")
    assert "layer=3" in page.url and "head=1" in page.url

    go(page, "Fine-tune")
    expect(page.locator("#ft-steps")).to_have_value("7")
    page.reload()
    expect(page.locator("#ft-steps")).to_have_value("7")
    expect(page.locator("#ft-lr")).to_have_value("0.02")
    expect(page.locator("#ft-checkpoint input[value=off]")).to_be_checked()


def a_mask(api, name: str = "two rows") -> dict:
    part = {"parameter": "model.layers.1.mlp.down_proj.weight", "kind": "rows", "index": [3, 7], "source": "test"}
    return httpx.post(api.url + "/api/masks", json={"name": name, "parts": [part]}, timeout=60).json()


def job_ids(api) -> set[str]:
    return {j["id"] for j in httpx.get(api.url + "/api/jobs", timeout=10).json()["jobs"]}


def test_a_double_click_starts_one_job_and_every_job_can_be_followed_and_cancelled(tiny_stack, page: Page) -> None:
    api, ui = tiny_stack
    mask = a_mask(api)
    page.goto(f"{ui.url}/finetune?mask={mask['id']}&steps=100000&baselines=")  # a link names the mask and the form
    expect(page.locator("#ft-mask")).to_contain_text("two rows")
    before = job_ids(api)
    page.get_by_role("button", name="Start fine-tune", exact=True).dblclick()
    expect(page.locator("#ft-message")).to_contain_text("Started job")
    page.wait_for_timeout(2000)
    started = job_ids(api) - before
    assert len(started) == 1
    first = started.pop()
    expect(page.locator("#ft-state[data-state=running]")).to_be_visible()

    page.get_by_role("button", name="Start fine-tune", exact=True).click()  # a second job, on purpose
    expect(page.locator("#ft-message")).not_to_contain_text(first)
    second = (job_ids(api) - before - {first}).pop()
    jobs = page.locator(".jobs-table")
    expect(jobs.locator("tr", has_text=first)).to_be_visible()
    expect(jobs.locator("tr.following", has_text=second)).to_be_visible()

    jobs.locator("tr", has_text=first).get_by_role("button", name="Follow").click()  # back to the first
    expect(jobs.locator("tr.following", has_text=first)).to_be_visible()
    for job in (first, second):
        row = jobs.locator("tr", has_text=job)
        row.get_by_role("button", name="Cancel job").click()
        expect(row).to_contain_text("cancelled")
    expect(page.locator("#ft-state[data-state=cancelled]")).to_be_visible()


def test_the_form_says_what_is_wrong_with_steps_and_warns_about_a_wild_learning_rate(tiny_stack, page: Page) -> None:
    api, ui = tiny_stack
    page.goto(f"{ui.url}/finetune?mask={a_mask(api)['id']}")
    page.locator("#ft-steps").fill("2.5")
    page.get_by_role("button", name="Start fine-tune", exact=True).click()
    expect(page.locator("#ft-message")).to_contain_text("steps: give a whole number of steps, 1 or more (not 2.5)")
    page.locator("#ft-lr").fill("1e9")
    expect(page.locator("#ft-lr-warning")).to_contain_text("far above the usual range")


def mask_line(page: Page) -> str:
    return page.locator("#sl-mask-line").inner_text()


def test_masks_merge_or_replace_with_undo_are_named_listed_deleted_and_lose_one_part(tiny_stack, page: Page) -> None:
    api, ui = tiny_stack
    page.goto(ui.url + "/layer?layer=1&position=0&dim=5")
    expect(page.locator("#lx-selected")).to_contain_text("dim 5")
    page.get_by_role("button", name="Add this dim's weights to the selection", exact=True).click()
    expect(page.locator("#lx-mask-message")).to_contain_text("Added")
    go(page, "Selection")
    expect(page.locator("#sl-mask-line")).to_contain_text("my selection")
    hand_parts = page.locator(".parts-table tbody tr").count()

    expect(page.locator("#sl-rules input:checked")).not_to_have_count(0)  # the rules arrive with the API's vocabulary
    page.locator("#sl-budget").fill("300")
    page.get_by_text("merge the suggestion into it", exact=True).click()
    page.get_by_role("button", name="Suggest", exact=True).click()
    expect(page.locator("#sl-mask-line")).to_contain_text("my selection + outlier rules")
    assert page.locator(".parts-table tbody tr").count() > hand_parts
    page.get_by_role("button", name=re.compile(r"^Undo \(back to my selection\)")).click()
    expect(page.locator("#sl-mask-line")).to_contain_text(re.compile(r"^my selection: "))
    expect(page.locator(".parts-table tbody tr")).to_have_count(hand_parts)  # the hand-built mask, as it was

    page.get_by_text("replace it", exact=True).click()
    page.get_by_role("button", name="Suggest", exact=True).click()
    expect(page.locator("#sl-mask-line")).to_contain_text(re.compile(r"^outlier rules: "))
    saved = page.locator(".saved-table")
    expect(saved.locator("tr.open")).to_contain_text("outlier rules")  # listed by name
    page.get_by_role("button", name=re.compile(r"^Undo")).click()
    expect(page.locator("#sl-mask-line")).to_contain_text(re.compile(r"^my selection: "))

    suggestion = saved.locator("tr").filter(has=page.locator("td", has_text=re.compile(r"^outlier rules$")))
    suggestion.get_by_role("button", name="Delete").click()
    expect(suggestion).to_have_count(0)
    expect(saved.locator("tr", has_text="my selection + outlier rules")).to_have_count(1)  # the merge stays until deleted

    page.locator(".parts-table tbody tr").first.get_by_role("button", name="×").click()
    expect(page.locator(".parts-table tbody tr")).to_have_count(hand_parts - 1)
    expect(page.locator("#sl-message")).to_contain_text("Removed the")

    page.locator("#sl-rename").fill("dim 5 by hand")
    page.get_by_role("button", name="Rename", exact=True).click()
    expect(page.locator("#sl-mask-line")).to_contain_text("dim 5 by hand")
    expect(saved.locator("tr.open")).to_contain_text("dim 5 by hand")
    mask_id = re.search(r"mask=([\w-]+)", page.url).group(1)
    assert httpx.get(f"{api.url}/api/masks/{mask_id}", timeout=10).json()["name"] == "dim 5 by hand"


def served(api) -> dict:
    return httpx.get(api.url + "/api/health", timeout=10).json()


def wait_until_serving(api, name: str) -> None:
    deadline = time.monotonic() + 300
    while not (served(api)["ready"] and served(api)["model"] == name):
        assert time.monotonic() < deadline, served(api)
        time.sleep(0.5)


def test_after_a_merge_the_bar_reloads_the_model_from_its_files(tiny_stack, page: Page) -> None:
    api, ui = tiny_stack
    page.goto(f"{ui.url}/finetune?mask={a_mask(api, 'merge me')['id']}&steps=4&lr=0.05&baselines=")
    expect(page.locator("#ft-mask")).to_contain_text("merge me")
    page.get_by_role("button", name="Start fine-tune", exact=True).click()
    expect(page.locator("#ft-state[data-state=done]")).to_be_visible()
    bar = page.locator("#deltas-bar")
    try:
        page.locator(".results-table").get_by_role("button", name="Apply", exact=True).first.click()
        expect(bar).to_contain_text("deltas — on")

        go(page, "Compare")  # the base model beside base + deltas, the deltas left on afterwards
        page.get_by_text("the base model and the applied run's deltas", exact=True).click()
        page.get_by_role("button", name="Compare", exact=True).click()
        expect(page.locator("#cp-curves .legendtext", has_text="base + deltas: top-1 |x|")).to_be_visible()
        assert served(api)["deltas"]["enabled"] is True
        expect(bar).to_contain_text("deltas — on")

        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Merge", exact=True).click()
        expect(bar).to_contain_text("merged into the weights until the model is reloaded")
        expect(page.get_by_role("button", name="Switch off", exact=True)).to_be_hidden()
        page.get_by_role("button", name="Reload the model", exact=True).click()
        expect(bar).to_be_hidden()
        expect(page.locator("#model-status")).to_contain_text("tiny-random ·")
        assert served(api)["deltas"] is None
    finally:
        if served(api).get("deltas"):
            httpx.post(api.url + "/api/model", json={"name": "tiny-random"}, timeout=30)
        wait_until_serving(api, "tiny-random")


@pytest.mark.real
def test_the_model_picker_switches_to_another_model_and_back_and_every_page_follows(tiny_stack, page: Page) -> None:
    api, ui = tiny_stack
    page.goto(ui.url + "/layer?layer=3&position=2&dim=5")
    page.get_by_role("button", name="Zero", exact=True).click()
    wait_for_stack(page, "L3 resid_post pos 2 dim 5: zero")
    try:
        page.locator("#model-status").click()  # the status opens the picker
        expect(page).to_have_url(re.compile(r"/model\b"))
        page.get_by_text("smollm2-135m —").click()
        page.get_by_role("button", name="Load", exact=True).click()
        expect(page.locator("#md-loading")).to_contain_text("Loading smollm2-135m")
        expect(page.locator("#md-loading")).to_contain_text(re.compile(r"reading weights|building the bridge"))  # the API's stage
        expect(page.locator("#model-status")).to_contain_text("smollm2-135m · 30 layers", timeout=300_000)
        expect(page.locator(".model-table")).to_contain_text("30")

        go(page, "Layer explorer")
        expect(page.locator("#lx-heatmap .gtitle")).to_contain_text("Layer 3 resid_post")
        expect(page.locator("#lx-layer .dash-slider-container, #lx-layer")).to_contain_text("28")  # 30 layers' marks
        expect(page.locator("#lx-numbers")).to_be_visible()  # the stack, evaluated again on the new model
        go(page, "Overview")
        expect(page.locator(".massive-table")).to_contain_text("507")  # SmolLM2's massive dim

        go(page, "Model")
        page.get_by_text("tiny-random —").click()
        page.get_by_role("button", name="Load", exact=True).click()
        expect(page.locator("#model-status")).to_contain_text("tiny-random · 4 layers", timeout=300_000)
        go(page, "Overview")
        expect(page.locator(".massive-table tbody tr", has_text="507")).to_have_count(0)
    finally:
        if served(api)["model"] != "tiny-random":
            httpx.post(api.url + "/api/model", json={"name": "tiny-random"}, timeout=30)
        wait_until_serving(api, "tiny-random")


LONG_PROMPT = ("The keeper counted boats and wrote the weather down. " * 10)[:500]  # 500 byte tokens: near the tiny model's 512


def test_a_long_prompt_keeps_the_page_short_and_the_results_beside_the_buttons(tiny_stack, page: Page) -> None:
    api, ui = tiny_stack
    page.goto(ui.url + "/layer?layer=1")
    use_prompt(page, LONG_PROMPT)
    expect(page).to_have_url(re.compile(r"prompt=The\+keeper"))  # the tab holds it now
    page.goto(ui.url + "/layer?layer=1&position=400&dim=5")  # a position only the long prompt has
    expect(page.locator("#lx-selected")).to_contain_text("position 400")
    page.get_by_role("button", name="Zero", exact=True).click()
    wait_for_stack(page, "pos 400 dim 5: zero")
    height = page.evaluate("document.documentElement.scrollHeight")
    assert height < 3000, height  # 501 rows of 18 px would make it over 9,000
    pane = page.locator("#lx-heatmap-pane").bounding_box()
    assert pane["height"] <= 0.75 * 1000
    for what in ("Zero", "Reset"):
        box = page.get_by_role("button", name=what, exact=True).bounding_box()
        assert box["y"] < pane["y"] + pane["height"]  # beside the heatmap, not below it
    numbers = page.locator("#lx-numbers").bounding_box()
    assert numbers["y"] < pane["y"] + pane["height"] and numbers["x"] > pane["x"] + pane["width"] - 5  # the results sit next to their buttons


def test_split_characters_show_as_their_bytes(tiny_stack, page: Page) -> None:
    api, ui = tiny_stack
    page.goto(ui.url + "/layer?layer=1")
    use_prompt(page, "Hot 🙂 day")
    labels = page.locator("#lx-heatmap .yaxislayer-above .ytick")
    expect(labels).to_have_count(13)  # BOS, "Hot ", the four bytes of the emoji, " day"
    texts = labels.all_text_contents()
    assert "5 '<0xF0>'" in texts and "8 '<0x82>'" in texts and not any("\ufffd" in t for t in texts)


def test_the_weights_layer_stays_where_it_was_put_through_an_invalid_k(tiny_stack, page: Page) -> None:
    api, ui = tiny_stack
    page.goto(ui.url + "/weights")
    expect(page.locator("#wt-histogram .js-plotly-plot")).to_have_count(2)
    box = page.locator("#wt-layer input[type=number]")
    box.fill("3")
    box.press("Enter")
    expect(page.locator("#wt-histogram")).to_contain_text("model.layers.3.")
    page.get_by_text("percentile", exact=True).click()
    k = page.locator("#wt-k")
    expect(k).to_have_value("99")  # the rule's default k has arrived: typing earlier races it
    k.fill("150")  # a percentile past 100: the API refuses it
    k.press("Enter")
    expect(page.locator("#wt-message")).to_contain_text("Could not read the weight statistics")
    k.fill("99")
    k.press("Enter")
    expect(page.locator("#wt-message")).not_to_contain_text("Could not")
    expect(page.locator("#wt-histogram")).to_contain_text("model.layers.3.")
    assert box.input_value() == "3"


def test_every_figure_exports_svg_and_a_300_dpi_png_and_none_can_be_shared(tiny_stack, page: Page) -> None:
    api, ui = tiny_stack
    for label in ("Overview", "Layer explorer", "Attention", "Weights", "Fine-tune"):
        page.goto(ui.url + "/")
        go(page, label)
        plots = page.locator(".js-plotly-plot")
        expect(plots.first).to_be_attached()
        page.wait_for_timeout(1500)
        count = plots.count()
        expect(page.locator(".modebar .paper-export")).to_have_count(count)
        assert page.locator(".modebar-btn[data-title^='Share'], .modebar-btn[data-title*='Chart Studio']").count() == 0

    page.goto(ui.url + "/")
    curve = page.locator("#ov-curve")
    expect(curve.locator(".scatterlayer .trace")).to_have_count(4)
    curve.hover()
    with page.expect_download() as svg:
        curve.get_by_role("button", name="Download for a paper as SVG").click()
    assert svg.value.suggested_filename == "largest-activations-per-layer.svg"
    text = Path(svg.value.path()).read_text()
    assert text.startswith("<svg") and 'width="672"' in text
    with page.expect_download() as png:
        curve.get_by_role("button", name="Download for a paper as PNG, 300 dpi").click()
    data = Path(png.value.path()).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == 2100  # 7 in at 300 dpi


def test_a_ui_served_beyond_loopback_with_a_key_asks_its_user_for_the_key(workdir: Path, page: Page) -> None:
    stack = _stack(workdir, "tiny-random", "keyed", {"OUTLIER_LAB_API_KEY": "s3cret"}, ("--host", "0.0.0.0"))
    _, ui = next(stack)
    try:
        page.goto(ui.url + "/layer?layer=2")
        expect(page.get_by_role("button", name="Sign in")).to_be_visible()
        expect(page.locator("#model-status")).to_have_count(0)  # no workbench, nothing of the API's
        page.locator("#login-key").fill("guess")
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#login-refused")).to_contain_text("The API refused that key")
        page.locator("#login-key").fill("s3cret")
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(re.compile(r"/layer\?layer=2"))
        expect(page.locator("#model-status")).to_contain_text("tiny-random ·")
        expect(page.locator("#lx-heatmap .heatmaplayer image")).to_be_attached()
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    finally:
        stack.close()  # stops both servers


def test_the_notebook_records_scans_and_interventions_reopens_them_and_its_command_prints_the_same_numbers(tiny_stack, page: Page) -> None:
    api, ui = tiny_stack
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto(ui.url + "/")
    expect(page.locator("#ov-curve .scatterlayer .trace")).to_have_count(4)
    page.goto(ui.url + "/layer?layer=1&position=3&dim=5")
    use_prompt(page, SUMMER)
    page.get_by_role("button", name="Zero", exact=True).click()
    wait_for_stack(page, "L1 resid_post pos 3 dim 5: zero")
    shown = page.locator("#lx-numbers .value").all_inner_texts()

    go(page, "Notebook")
    entries = page.locator(".notebook-entry")
    expect(entries.first).to_have_attribute("data-kind", "intervene")
    expect(page.locator(".notebook-entry[data-kind=scan]").first).to_be_visible()
    latest = entries.first
    command = latest.locator("pre[id^=nb-cli-]").inner_text()
    assert command.startswith("outlier-lab intervene --model tiny-random --device cpu")
    latest.locator(".code-block", has=page.locator("pre[id^=nb-cli-]")).locator(".copy").click()
    assert page.evaluate("navigator.clipboard.readText()") == command  # copy as code

    shell = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=300, check=True,
                           env={**_env(workdir_of(api)), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})
    printed = json.loads(shell.stdout)
    assert [format_perplexity(printed[k]["perplexity"]) for k in ("baseline", "intervened", "control")] == shown

    with page.expect_download() as exported:
        page.get_by_role("button", name="Export JSON", exact=True).click()
    notebook = json.loads(Path(exported.value.path()).read_text())
    assert {e["kind"] for e in notebook["entries"]} >= {"scan", "intervene"}

    page.reload()  # the session's notebook outlives a reload, and reopens a view
    latest = page.locator(".notebook-entry").first
    latest.get_by_role("link", name="reopen").click()
    expect(page.locator("#lx-stack")).to_contain_text("L1 resid_post pos 3 dim 5: zero")
    expect(page.locator("#lx-numbers .value").first).to_have_text(shown[0])


def workdir_of(api) -> Path:
    return api.log.parent / "runs-notebook"


def test_compare_bos_on_and_off_and_two_prompts_side_by_side_with_their_difference(tiny_stack, page: Page) -> None:
    api, ui = tiny_stack
    page.goto(ui.url + "/compare?mode=bos&layer=2")
    page.get_by_role("button", name="Compare", exact=True).click()
    curves = page.locator("#cp-curves")
    expect(curves.locator(".legendtext", has_text="BOS on: top-1 |x|")).to_be_visible()
    expect(curves.locator(".legendtext", has_text="BOS off: top-1 |x|")).to_be_visible()
    expect(page.locator("#cp-difference .barlayer .trace")).to_have_count(1)
    expect(page.locator("#cp-heat-diff .gtitle")).to_contain_text("Layer 2: |x| of BOS off over BOS on")
    expect(page.locator("#cp-message")).to_contain_text("BOS off has no position 0")
    bodies = [httpx.post(api.url + "/api/scan", json={"text": PROMPT_OF_TAB, "prepend_bos": bos, "abs_threshold": 0, "median_ratio": 300}, timeout=120).json()
              for bos in (True, False)]
    shown = page.evaluate("document.querySelector('#cp-curves .js-plotly-plot').data.map(t => t.y[3])")
    assert shown[0] == max(abs(t["value"]) for t in bodies[0]["layers"][3]["top"])
    assert shown[2] == max(abs(t["value"]) for t in bodies[1]["layers"][3]["top"])

    page.get_by_text("the prompt and another prompt", exact=True).click()
    page.locator("#cp-other").fill(SUMMER)
    page.get_by_role("button", name="Compare", exact=True).click()
    expect(curves.locator(".legendtext", has_text="prompt B: top-1 |x|")).to_be_visible()
    expect(page.locator("#cp-message")).to_contain_text("The prompts differ")
    page.reload()  # the comparison's choices are in the URL
    expect(page.locator("#cp-other")).to_have_value(SUMMER)
    expect(page.locator("#cp-mode input[value=prompts]")).to_be_checked()


def test_attention_shows_a_prompt_too_long_for_one_pattern_pooled_into_blocks(tiny_stack, page: Page) -> None:
    api, ui = tiny_stack
    page.goto(ui.url + "/attention")
    use_prompt(page, LONG_PROMPT)
    title = page.locator("#at-pattern .gtitle")
    expect(title).to_contain_text("pooled into")
    expect(page.locator("#at-message")).to_be_empty()  # no refusal: every prompt the server takes can be viewed
    labels = page.locator("#at-pattern .yaxislayer-above .ytick").all_text_contents()
    assert "0 '<bos>'" in labels and any("–" in label for label in labels)  # position 0 alone, the rest in blocks
