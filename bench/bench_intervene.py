"""Intervention with evaluation vs one plain forward pass, on a 128-token prompt.

Budget (DESIGN.md): an intervention round trip costs at most 2x one forward pass. The
baseline is cached per prompt, so a warm call runs the intervened and control arms only
(one batched forward for activation interventions, two passes for weight edits).

    .venv/bin/python bench/bench_intervene.py [--model smollm2-135m] [--device cpu] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Callable

import torch
from timing import prompt_of, timed

from outlier_core.intervene.evaluate import evaluate
from outlier_core.intervene.interventions import Intervention
from outlier_core.intervene.weight_edits import WeightEdit
from outlier_core.load.models import load_model
from outlier_core.load.tokens import encode
from outlier_core.observe.capture import scan_encoded

PROMPT_TOKENS = 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    model = load_model(args.model, device=args.device)
    text = prompt_of(model, PROMPT_TOKENS)
    encoded = encode(model, text)
    layer = model.n_layers // 2
    top = scan_encoded(model, encoded).layers[layer].top[0]  # the largest entry: the massive one where there is one
    activation = [Intervention(layer, top.position, top.dim, "zero")]
    down_proj = f"model.layers.{layer}.mlp.down_proj.weight"
    weights = [WeightEdit(down_proj, (top.dim, 0))]

    def plain() -> None:
        with torch.inference_mode():
            model.bridge(encoded.ids, return_type="logits")

    cases: dict[str, Callable[[], object]] = {
        "plain forward (logits)": plain,
        "intervene, activation (warm baseline)": lambda: evaluate(model, text, activation),
        "intervene, weight entry (warm baseline)": lambda: evaluate(model, text, weight_edits=weights),
    }
    for fn in cases.values():  # warm-up: first-call costs, baseline cache
        fn()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):  # interleaved, so load from other processes hits every case alike
        for name, fn in cases.items():
            samples[name].append(timed(fn, model.device))
    forward = statistics.median(samples["plain forward (logits)"])
    sys.stdout.write(f"{args.model} on {model.device} ({str(model.dtype).removeprefix('torch.')}), "
                     f"{encoded.ids.shape[1]}-token prompt, median of {args.repeats}\n")
    sys.stdout.write(f"{'case':42s} {'ms':>9s} {'x forward':>10s}\n")
    for name, times in samples.items():
        median = statistics.median(times)
        sys.stdout.write(f"{name:42s} {median * 1000:9.1f} {median / forward:10.2f}\n")


if __name__ == "__main__":
    main()
