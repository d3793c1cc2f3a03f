"""The workbench in a real headless Chromium, against the real API and UI as processes.

Each server is `outlier-lab api` / `outlier-lab ui` in its own process on a free loopback
port, torn down at the end. Chromium is Debian's (`apt-get install chromium`), driven by
Playwright without its own browser download. Screenshots of every view land in
artifacts/screenshots/.

Flows: the overview curve; click a heatmap cell and intervene; add to the selection,
suggest, export and load the file back; a fine-tune to done and a cancelled one; a run's
deltas applied, switched off and detached from the bar every page shows; the
backend-down message; and the real SmolLM2 end to end (zero the massive activation and
see perplexity explode, mean-replace it and see it recover).
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from app.ui.client import HEATMAP_DIMS
from app.ui.state import format_perplexity
from outlier_core.load.models import LoadedModel
from outlier_core.select.mask_files import from_json, from_safetensors_bytes

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
STARTUP_S = 180  # importing TransformerLens takes ~6 s on an idle machine; CI's two cores are shared
STOP_S = 30  # serve's own bound is ~10 s (the API's grace, then a kill); the rest is a loaded machine's slack
MODEL_CALL_MS = 120_000  # one forward pass or intervention, on a busy CPU
VIEWPORT = {"width": 1400, "height": 1000}
expect.set_options(timeout=MODEL_CALL_MS)  # assertions wait for model calls on a busy CPU, not 5 s


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def _env(runs_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTLIER_LAB_")}
    env.update(HF_HUB_OFFLINE="1", OUTLIER_LAB_RUNS_DIR=str(runs_dir))
    return env


def _start(args: list[str], runs_dir: Path, log: Path, port: int, env: dict[str, str] | None = None) -> Server:
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli.main", *args, "--port", str(port)], env={**_env(runs_dir), **(env or {})}, stdout=sink, stderr=subprocess.STDOUT,
        )
    return Server(f"http://127.0.0.1:{port}", process, log)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait(server: Server, path: str, ready) -> None:
    deadline = time.monotonic() + STARTUP_S
    with httpx.Client(base_url=server.url, timeout=5.0) as client:
        while time.monotonic() < deadline:
            assert server.process.poll() is None, f"{server.url} exited during startup:\n{server.tail()}"
            try:
                response = client.get(path)
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            if ready(response):
                return
            time.sleep(0.2)
    raise AssertionError(f"{server.url}{path} never became ready:\n{server.tail()}")


def _stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="outlier-lab-ui-") as folder:
        yield Path(folder)


def _stack(workdir: Path, model: str, label: str | None = None, env: dict[str, str] | None = None, ui_args: tuple[str, ...] = ()) -> Iterator[tuple[Server, Server]]:
    """An API on `model` and a UI talking to it (both with `env`; the UI with `ui_args`), their
    runs and logs named by `label` (default: the model); both stopped at the end, whatever happens."""
    label = label or model
    runs = workdir / f"runs-{label}"
    api = _start(["api", "--model", model, "--device", "cpu"], runs, workdir / f"api-{label}.log", free_port(), env)
    ui = None
    try:
        ui = _start(["ui", "--api-url", api.url, *ui_args], runs, workdir / f"ui-{label}.log", free_port(), env)
        _wait(api, "/api/health", lambda r: r.status_code == 200 and r.json()["ready"])
        _wait(ui, "/", lambda r: r.status_code == 200)
        yield api, ui
    finally:
        for server in (ui, api):
            if server is not None:
                _stop(server)


@pytest.fixture(scope="module")
def tiny_stack(workdir: Path) -> Iterator[tuple[Server, Server]]:
    yield from _stack(workdir, "tiny-random")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture()
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context per test: its own session storage, so no state leaks between flows."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    context.set_default_timeout(MODEL_CALL_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def shoot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(300)  # let plotly finish its transitions
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def go(page: Page, label: str) -> None:
    """Navigate with the nav bar, as a user does: the tab's stores stay in place."""
    page.locator(".nav-link", has_text=label).click()


def numbers(page: Page) -> tuple[float, float, float]:
    """(baseline, intervened, control) perplexity as shown."""
    values = page.locator("#lx-numbers .value").all_inner_texts()
    return tuple(float(v.replace(",", "")) for v in values)  # type: ignore[return-value]


def wait_for_stack(page: Page, text: str) -> None:
    expect(page.locator("#lx-stack")).to_contain_text(text)
    expect(page.locator("#lx-numbers")).to_be_visible()


SHORT_PROMPT = "Tiny models still have residual streams."  # 41 byte tokens: a heatmap that fits the screen


def use_prompt(page: Page, text: str) -> None:
    page.locator("#prompt-text").fill(text)
    page.get_by_role("button", name="Run", exact=True).click()


# Where a data point sits on screen, from plotly's own axes (category index, or linear / log10 value).
AXIS_POINT_JS = """([graph, x, y]) => {
    const gd = document.querySelector(`#${graph} .js-plotly-plot`);
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
    return {x: box.left + xa._offset + xa.l2p(x), y: box.top + ya._offset + ya.l2p(y)};
}"""


def click_heatmap_cell(page: Page, graph: str, row: int, col: int) -> None:
    """Click the centre of one heatmap cell with the mouse, once no redraw of it is in flight
    (a loading graph is hidden under its spinner, and a click there selects nothing)."""
    expect(page.locator(f"#{graph}")).not_to_have_attribute("data-dash-is-loading", "true")
    expect(page.locator(f"#{graph}")).to_be_visible()
    page.locator(f"#{graph}").scroll_into_view_if_needed()
    centre = page.evaluate(AXIS_POINT_JS, [graph, col, row])
    page.mouse.click(centre["x"], centre["y"])


def add_dim_5_of_layer_1(page: Page, ui_url: str) -> None:
    """Open layer 1 at (position 0, dim 5) by URL and add that dim's weights to the selection."""
    page.goto(ui_url + "/layer?layer=1&position=0&dim=5")
    expect(page.locator("#lx-selected")).to_contain_text("dim 5")
    page.get_by_role("button", name="Add this dim's weights to the selection", exact=True).click()
    expect(page.locator("#lx-mask-message")).to_contain_text("Added")


# --- tiny model ----------------------------------------------------------------------------


def test_overview_draws_the_layer_curve(tiny_stack, page: Page) -> None:
    api, ui = tiny_stack
    page.goto(ui.url + "/")
    expect(page.locator("#model-status")).to_contain_text("tiny-random")
    curve = page.locator("#ov-curve")
    expect(curve.locator(".legendtext", has_text="top-1 |x|")).to_be_visible()
    expect(curve.locator(".scatterlayer .trace")).to_have_count(4)  # top-1, top-2, top-3, median
    expect(page.locator("#ov-message")).to_contain_text("tokens")
    shoot(page, "tiny-overview")


def test_click_a_cell_then_set_mean_replace_zero_and_reset(tiny_stack, page: Page) -> None:
    api, ui = tiny_stack
    page.goto(ui.url + "/layer?layer=2")
    use_prompt(page, SHORT_PROMPT)
    shown = httpx.post(api.url + "/api/activations", json={"text": SHORT_PROMPT, "layer": 2, "max_dims": HEATMAP_DIMS}, timeout=60).json()
    expect(page.locator("#lx-heatmap .gtitle")).to_contain_text(f"max {shown['max_abs']:,.1f}")  # the short prompt's map
    # The layer's largest entry, found independently of the page: its row and its column on screen.
    position, column = max(((p, c) for p in range(len(shown["tokens"])) for c in range(len(shown["dims"]))), key=lambda pc: abs(shown["values"][pc[0]][pc[1]]))
    dim = shown["dims"][column]
    click_heatmap_cell(page, "lx-heatmap", row=position, col=column)
    expect(page.locator("#lx-selected")).to_contain_text(re.compile(rf"layer 2 · resid_post · position {position} .* dim {dim} ="))

    # Random weights carry no massive activation to zero, so push the entry far out instead.
    page.locator("#lx-value").fill("5000")
    page.get_by_role("button", name="Set", exact=True).click()
    wait_for_stack(page, "set to 5000")
    baseline, pushed, control = numbers(page)
    assert pushed != baseline

    page.get_by_role("button", name="Mean-replace", exact=True).click()
    wait_for_stack(page, "mean-replace")
    expect(page.locator("#lx-stack li")).to_have_count(1)  # replaced the set on the same coordinate
    expect(page.locator("#lx-numbers .value").nth(1)).not_to_have_text(format_perplexity(pushed))
    _, meaned, _ = numbers(page)
    assert abs(meaned - baseline) < abs(pushed - baseline)  # it recovers
    shoot(page, "tiny-layer-explorer")

    page.get_by_role("button", name="Zero", exact=True).click()
    wait_for_stack(page, "zero")

    page.get_by_role("button", name="Reset", exact=True).click()
    expect(page.locator("#lx-stack")).to_contain_text("No interventions yet")


def test_selection_add_suggest_export_and_load_back(tiny_stack, page: Page, tiny: LoadedModel) -> None:
    api, ui = tiny_stack
    add_dim_5_of_layer_1(page, ui.url)

    go(page, "Selection")
    table = page.locator("#sl-table")
    expect(table).to_contain_text("model.layers.1.post_attention_layernorm.weight")
    expect(table).to_contain_text("model.layers.1.mlp.down_proj.weight")

    page.locator("#sl-budget").fill("300")
    page.get_by_role("button", name="Suggest", exact=True).click()
    expect(page.locator("#sl-message")).to_contain_text("Suggested within a budget of 300")
    line = page.locator("#sl-mask-line")
    expect(line).to_contain_text("outlier rules")
    shown = int(re.search(r": ([\d,]+) parameters?", line.inner_text()).group(1).replace(",", ""))
    assert 0 < shown <= 300
    shoot(page, "tiny-selection")

    with page.expect_download() as download:
        page.get_by_role("button", name="Export safetensors", exact=True).click()
    tensor_mask = from_safetensors_bytes(Path(download.value.path()).read_bytes())
    with page.expect_download() as download:
        page.get_by_role("button", name="Export JSON", exact=True).click()
    json_mask = from_json(json.loads(Path(download.value.path()).read_text()))
    for mask in (tensor_mask, json_mask):
        mask.validate(tiny)  # fits the model the API serves
        assert mask.name == "outlier rules" and mask.count == shown
    assert tensor_mask.same_as(json_mask)


def test_finetune_runs_to_done_and_a_long_one_cancels(tiny_stack, page: Page) -> None:
    api, ui = tiny_stack
    page.goto(ui.url + "/selection")
    page.locator("#sl-budget").fill("200")
    page.get_by_role("button", name="Suggest", exact=True).click()
    expect(page.locator("#sl-mask-line")).to_contain_text("outlier rules")

    go(page, "Fine-tune")
    expect(page.locator("#ft-mask")).to_contain_text("outlier rules")
    page.locator("#ft-steps").fill("4")
    page.get_by_role("button", name="Start fine-tune", exact=True).click()
    expect(page.locator("#ft-message")).to_contain_text("Started job")
    expect(page.locator("#ft-state[data-state=done]")).to_be_visible()
    results = page.locator(".results-table tbody tr")
    expect(results).to_have_count(2)  # the mask, and the random baseline of the same size
    expect(results.nth(1)).to_contain_text("random")
    expect(page.locator("#ft-loss .scatterlayer .trace")).to_have_count(2)
    expect(page.locator("#ft-runs")).to_contain_text("outlier rules")
    shoot(page, "tiny-finetune")

    page.locator("#ft-steps").fill("100000")
    page.get_by_role("button", name="Start fine-tune", exact=True).click()
    expect(page.locator("#ft-state[data-state=running]")).to_be_visible()
    page.get_by_role("button", name="Cancel", exact=True).click()
    expect(page.locator("#ft-state[data-state=cancelled]")).to_be_visible()


def test_apply_a_run_then_switch_it_off_and_detach_it_from_the_bar(tiny_stack, page: Page) -> None:
    api, ui = tiny_stack
    add_dim_5_of_layer_1(page, ui.url)
    go(page, "Fine-tune")
    page.locator("#ft-steps").fill("4")
    page.locator("#ft-lr").fill("0.05")  # large steps: the tuned model's numbers move visibly
    page.get_by_role("button", name="Start fine-tune", exact=True).click()
    expect(page.locator("#ft-message")).to_contain_text("Started job")
    job_id = re.search(r"Started job ([\w-]+)", page.locator("#ft-message").inner_text()).group(1)
    expect(page.locator("#ft-state[data-state=done]")).to_be_visible()

    def largest_at_layer_3() -> str:
        """The heatmap title's number, as the API computes it for the served model now."""
        body = {"text": SHORT_PROMPT, "layer": 3, "max_dims": HEATMAP_DIMS}
        return f"max {httpx.post(api.url + '/api/activations', json=body, timeout=60).json()['max_abs']:,.1f}"

    base = largest_at_layer_3()
    bar = page.locator("#deltas-bar")
    expect(bar).to_be_hidden()
    try:
        page.locator(".results-table").get_by_role("button", name="Apply", exact=True).first.click()
        expect(bar).to_contain_text(f"serving base + {job_id}/mask deltas — on")
        tuned = largest_at_layer_3()
        assert tuned != base

        page.goto(ui.url + "/layer?layer=3")  # a fresh page load: the bar comes from the API's health
        use_prompt(page, SHORT_PROMPT)
        expect(bar).to_contain_text(f"serving base + {job_id}/mask deltas — on")
        title = page.locator("#lx-heatmap .gtitle")
        expect(title).to_contain_text(tuned)
        shoot(page, "tiny-deltas-applied")

        page.get_by_role("button", name="Switch off", exact=True).click()
        expect(bar).to_contain_text(f"serving base + {job_id}/mask deltas — off")
        expect(title).to_contain_text(base)
        page.get_by_role("button", name="Detach", exact=True).click()
        expect(bar).to_be_hidden()
        expect(title).to_contain_text(base)
    finally:
        httpx.delete(api.url + "/api/model/deltas", timeout=60)  # the flows after this one read the weights


def test_attention_and_weights_views_draw(tiny_stack, page: Page) -> None:
    api, ui = tiny_stack
    page.goto(ui.url + "/attention")
    expect(page.locator("#at-pattern .heatmaplayer image")).to_be_attached()
    expect(page.locator("#at-pattern .gtitle")).to_contain_text("of attention on position 0")
    expect(page.locator("#at-heads .heatmaplayer image")).to_be_attached()
    shoot(page, "tiny-attention")
    go(page, "Weights")
    expect(page.locator("#wt-histogram .js-plotly-plot")).to_have_count(2)  # the layer's two norms
    title = page.locator("#wt-matrix-histogram .gtitle")
    expect(title).to_contain_text("outliers by sigma")
    shoot(page, "tiny-weights")

    # Click the matrix's most extreme entry (its ▲ marker) to put it in the selection.
    matrix = title.text_content().split(" — ")[0]
    extreme = httpx.get(f"{api.url}/api/weights/{matrix}", params={"rule": "sigma", "k": 3}, timeout=60).json()["outliers"]["listed"][0]
    page.locator("#wt-matrix-histogram").scroll_into_view_if_needed()
    at = page.evaluate(AXIS_POINT_JS, ["wt-matrix-histogram", extreme["value"], math.log10(0.6)])
    page.mouse.click(at["x"], at["y"])
    expect(page.locator("#wt-mask-message")).to_contain_text(f"Added 1 entry of {matrix}")
    go(page, "Selection")
    expect(page.locator("#sl-table")).to_contain_text(matrix)


def test_a_down_backend_is_said_in_words(workdir: Path, page: Page) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    ui = _start(["ui", "--api-url", nobody], workdir / "runs-none", workdir / "ui-down.log", free_port())
    try:
        _wait(ui, "/", lambda r: r.status_code == 200)
        page.goto(ui.url + "/")
        expect(page.locator("#model-status")).to_have_text("API unreachable")
        expect(page.locator("#backend-banner")).to_contain_text(f"Cannot reach the Outlier Lab API at {nobody}")
        expect(page.locator("#ov-curve")).to_contain_text("Waiting for the API")
        shoot(page, "backend-down")
    finally:
        _stop(ui)


# --- the real model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smol_stack(workdir: Path) -> Iterator[tuple[Server, Server]]:
    yield from _stack(workdir, "smollm2-135m")


@pytest.mark.real
def test_real_model_massive_activation_zero_explodes_and_mean_recovers(smol_stack, page: Page) -> None:
    api, ui = smol_stack
    page.goto(ui.url + "/")
    expect(page.locator("#model-status")).to_contain_text("smollm2-135m")
    massive = page.locator(".massive-table tbody tr").first
    expect(massive).to_contain_text("507")  # BOS, dim 507: the model's massive activation
    shoot(page, "real-overview")

    massive.get_by_role("link", name="explore").click()
    expect(page.locator("#lx-selected")).to_contain_text("position 0 · dim 507")
    expect(page.locator("#lx-heatmap .heatmaplayer image")).to_be_attached()

    page.get_by_role("button", name="Zero", exact=True).click()
    wait_for_stack(page, "zero")
    baseline, zeroed, control = numbers(page)
    assert zeroed > 1000 * baseline  # DESIGN.md: ~18 -> ~2,000,000
    assert control == pytest.approx(baseline, rel=0.1)  # zeroing an ordinary coordinate changes little
    shoot(page, "real-layer-zero")

    page.get_by_role("button", name="Mean-replace", exact=True).click()
    wait_for_stack(page, "mean-replace")
    _, meaned, _ = numbers(page)
    assert meaned == pytest.approx(baseline, rel=0.25)
    shoot(page, "real-layer-mean")

    go(page, "Attention")
    expect(page.locator("#at-sink .scatterlayer .trace")).to_have_count(2)  # before and after the mean-replace
    shoot(page, "real-attention")

    go(page, "Weights")
    expect(page.locator("#wt-histogram .js-plotly-plot")).to_have_count(2)
    expect(page.locator("#wt-message")).to_contain_text("507")
    shoot(page, "real-weights")


# --- outlier-lab serve ---------------------------------------------------------------------------


def test_serve_starts_api_and_ui_and_ctrl_c_stops_both(workdir: Path) -> None:
    api_port, ui_port = free_port(), free_port()
    log = workdir / "serve.log"
    with log.open("wb") as sink:
        serve = subprocess.Popen(
            [sys.executable, "-m", "app.cli.main", "serve", "--model", "tiny-random", "--device", "cpu", "--port", str(ui_port), "--api-port", str(api_port)],
            env=_env(workdir / "runs-serve"), stdout=sink, stderr=subprocess.STDOUT,
            preexec_fn=_default_sigint,  # as a terminal's foreground job: a suite run in the background ignores SIGINT, and its children would too
        )
    server = Server(f"http://127.0.0.1:{ui_port}", serve, log)
    try:
        _wait(Server(f"http://127.0.0.1:{api_port}", serve, log), "/api/health", lambda r: r.json()["ready"])
        _wait(server, "/", lambda r: r.status_code == 200)
        serve.send_signal(signal.SIGINT)
        try:
            code = serve.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve still ran {STOP_S} s after Ctrl-C:\n{server.tail()}")
        assert code == 0, server.tail()
        for port in (api_port, ui_port):
            with socket.socket() as probe:  # nothing listens any more: both servers are gone
                assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers after Ctrl-C"
    finally:
        _stop(server)
