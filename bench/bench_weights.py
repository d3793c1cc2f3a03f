"""Weight statistics of every norm and projection of SmolLM2-135M (271 tensors, ~106M entries).

Budget (issue 2): a few seconds on CPU. Reports the median of several runs per rule, and
what one pass of the same size spends in the sort alone.

    .venv/bin/python bench/bench_weights.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics

import numpy as np
from timing import timed

from outlier_core.load.models import load_model
from outlier_core.observe.tensor_stats import WeightRule
from outlier_core.observe.weights import model_parameters, model_weight_stats

log = logging.getLogger("bench_weights")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = load_model("smollm2-135m", device="cpu")
    tensors = [p.tensor.detach().reshape(-1).numpy() for p in model_parameters(model, ("norm", "matrix"))]
    log.info("%d tensors, %.1fM entries", len(tensors), sum(t.size for t in tensors) / 1e6)
    sort_only = statistics.median(timed(lambda: [np.sort(t) for t in tensors]) for _ in range(args.repeats))
    log.info("%-22s %8.2f s", "numpy sort alone", sort_only)
    for rule in (WeightRule("sigma", 3), WeightRule("percentile", 99), WeightRule("mad", 3)):
        seconds = statistics.median(timed(lambda: model_weight_stats(model, rule)) for _ in range(args.repeats))
        log.info("%-22s %8.2f s", f"{rule.kind} k={rule.k:g}", seconds)


if __name__ == "__main__":
    main()
