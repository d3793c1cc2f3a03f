"""The lab notebook keeps what the other views make, in a real headless Chromium against the real
API and UI processes: a mask built by hand from the Layer explorer, and a fine-tune launched from
its page, whose entry shows the run's final numbers once the job has ended — each as the API
answered it."""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from tests.test_ui_browser import (  # noqa: F401  (fixtures, used by name)
    browser,
    go,
    page,
    tiny_stack,
    workdir,
)

JOB_MS = 300_000


def newest_mask(api) -> dict:
    masks = httpx.get(api.url + "/api/masks", timeout=10).json()["masks"]
    return max(masks, key=lambda m: m["id"])


def test_a_hand_built_mask_and_a_finished_runs_final_numbers_land_in_the_notebook(tiny_stack, page: Page) -> None:
    api, ui = tiny_stack
    page.goto(ui.url + "/layer?layer=1&position=3&dim=5")
    expect(page.locator("#lx-heatmap .heatmaplayer image")).to_be_attached()
    page.get_by_role("button", name="Add this dim's weights to the selection").click()
    expect(page.locator("#lx-mask-message")).to_contain_text("Now my selection")
    mask = newest_mask(api)
    expect(page.locator("#lx-mask-message")).to_contain_text(f"{mask['count']:,} parameters")

    page.goto(f"{ui.url}/finetune?mask={mask['id']}&steps=2&baselines=")
    expect(page.locator("#ft-mask")).to_contain_text(mask["name"])
    before = {j["id"] for j in httpx.get(api.url + "/api/jobs", timeout=10).json()["jobs"]}
    page.get_by_role("button", name="Start fine-tune", exact=True).click()
    expect(page.locator("#ft-state[data-state=done]")).to_be_visible(timeout=JOB_MS)
    (job,) = {j["id"] for j in httpx.get(api.url + "/api/jobs", timeout=10).json()["jobs"]} - before
    result = httpx.get(f"{api.url}/api/jobs/{job}/result", timeout=60).json()

    go(page, "Notebook")
    built = page.locator(".notebook-entry[data-kind=mask]", has_text="by hand").first
    expect(built).to_contain_text(f"{mask['count']:,} parameter")
    expect(built.locator("pre[id^=nb-python-]")).to_contain_text("extended(model, mask, parts=[], dims=[(1, 5)])")
    final = page.locator(".notebook-entry[data-kind=run] .entry-final").first
    run = result["runs"][0]
    expect(final).to_contain_text(f"done at step 2 of 2 · run {result['folder'].rstrip('/').split('/')[-1]}")
    expect(final).to_contain_text(f"{run['name']}: last training loss {run['train_loss'][-1]:.4f}, held-out after {run['eval_after']['loss']:.4f}")
    expect(page.locator(".notebook-entry[data-kind=run] pre[id^=nb-cli-]").first).to_contain_text("--steps 2 --lr 0.001 --full-lr 0.0001")
