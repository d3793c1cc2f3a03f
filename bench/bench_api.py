"""HTTP round trip vs the same call in process: scan and intervene on a 128-token prompt.

One run, one model: the API serves the very model object the in-process calls use, from a
uvicorn server on a loopback port in this process, so the ratio is the cost of HTTP, JSON,
validation and the model queue. The intervention round trip is also divided by one
forward pass through the bridge (budget in DESIGN.md: at most 2x). Timings alternate
between the variants so that machine load affects all alike; medians are reported.

    .venv/bin/python bench/bench_api.py [--model smollm2-135m] [--device cpu] [--repeats 7]
"""

from __future__ import annotations

import argparse
import logging
import socket
import statistics
import tempfile
import threading
import time
from typing import Callable

import httpx
import torch
import uvicorn
from timing import prompt_of, timed

from app.api.main import create_app
from app.api.settings import Settings
from outlier_core.contract import to_json
from outlier_core.intervene.evaluate import evaluate
from outlier_core.intervene.interventions import Intervention
from outlier_core.load.models import load_model
from outlier_core.load.tokens import encode
from outlier_core.observe.capture import scan, scan_encoded

log = logging.getLogger("bench")

PROMPT_TOKENS = 128


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(model, runs_dir: str) -> tuple[uvicorn.Server, str]:
    port = free_port()
    app = create_app(Settings(runs_dir=runs_dir), model=model)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default=None)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would bury the table
    model = load_model(args.model, device=args.device)
    text = prompt_of(model, PROMPT_TOKENS)
    encoded = encode(model, text)
    layer = model.n_layers // 2
    top = scan_encoded(model, encoded).layers[layer].top[0]  # the largest entry: the massive one where there is one
    intervention = {"layer": layer, "position": top.position, "dim": top.dim, "mode": "zero"}

    def one_forward() -> None:  # the same measure as bench_intervene.py
        with torch.inference_mode():
            model.bridge(encoded.ids, return_type="logits")

    with tempfile.TemporaryDirectory() as runs_dir, httpx.Client(timeout=600.0) as http:
        server, url = serve(model, runs_dir)

        def over_http(path: str, body: dict) -> Callable[[], object]:
            def call() -> None:
                response = http.post(f"{url}{path}", json=body)
                response.raise_for_status()
                response.json()

            return call

        runs = {
            "scan in process": lambda: to_json(scan(model, text)),
            "scan over HTTP": over_http("/api/scan", {"text": text}),
            "intervene in process": lambda: to_json(evaluate(model, text, [Intervention(**intervention)])),
            "intervene over HTTP": over_http("/api/intervene", {"text": text, "interventions": [intervention]}),
            "one forward pass": one_forward,
        }
        for fn in runs.values():
            fn()  # warm-up; also fills the per-prompt baseline cache both intervene variants use
        samples: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                samples[name].append(timed(fn, model.device))
        server.should_exit = True
    m = {name: statistics.median(values) for name, values in samples.items()}
    log.info("%s on %s, %d tokens, median of %d", model.name, model.device, encoded.ids.shape[1], args.repeats)
    for name, seconds in m.items():
        log.info("  %-22s %8.1f ms", name, seconds * 1000)
    log.info("  scan HTTP / in process       %5.2f", m["scan over HTTP"] / m["scan in process"])
    log.info("  intervene HTTP / in process  %5.2f", m["intervene over HTTP"] / m["intervene in process"])
    log.info("  intervene HTTP / forward     %5.2f  (budget 2.0)", m["intervene over HTTP"] / m["one forward pass"])


if __name__ == "__main__":
    main()
