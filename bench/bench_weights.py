"""Weight statistics of every tensor against the memory-bound floor, in one run.

Budget (issue 14): statistics of every norm, matrix and embedding under one rule take at
most 5x one plain pass that computes the sum and the sum of squares of every weight
(`t.sum()` and `torch.linalg.vector_norm(t)`, both reductions without copies). Measured on
SmolLM2-135M and on a config-built 472M-parameter Llama (d_model 2048, FFN 5632, 6 layers,
vocab 40,000, random weights, saved once under --cache). The two alternate; medians.

    .venv/bin/python bench/bench_weights.py [--repeats 3] [--threads N] [--device cpu] [--cache /tmp/outlier-lab-bench]
"""

from __future__ import annotations

import argparse
import logging
import statistics
from pathlib import Path

import torch
from random_models import LlamaShape, saved_llama
from timing import timed

from outlier_core.load.models import load_model
from outlier_core.observe.tensor_stats import WeightRule
from outlier_core.observe.weights import KINDS, model_parameters, model_weight_stats

log = logging.getLogger("bench")

LLAMA_472M = LlamaShape(d_model=2048, d_ffn=5632, n_layers=6, n_heads=16, n_kv_heads=16, vocab=40000)
RULES = (WeightRule("sigma", 3), WeightRule("percentile", 99), WeightRule("mad", 3))


def floor_pass(tensors: list[torch.Tensor]) -> None:
    for t in tensors:
        t.sum()
        torch.linalg.vector_norm(t)


def measure(model, repeats: int) -> list[tuple[str, float, float]]:
    """(rule, statistics s, floor s) per rule: medians over `repeats` alternating runs."""
    tensors = [p.tensor.detach() for p in model_parameters(model, KINDS)]
    log.info("%s: %d tensors, %.1f M entries", model.name, len(tensors), sum(t.numel() for t in tensors) / 1e6)
    rows = []
    for rule in RULES:
        model_weight_stats(model, rule, kinds=KINDS)  # warm-up
        stats, floor = [], []
        for _ in range(repeats):
            floor.append(timed(lambda: floor_pass(tensors), model.device))
            stats.append(timed(lambda rule=rule: model_weight_stats(model, rule, kinds=KINDS), model.device))
        rows.append((f"{rule.kind} k={rule.k:g}", statistics.median(stats), statistics.median(floor)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/outlier-lab-bench"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    table = []
    for name in ("smollm2-135m", str(saved_llama(LLAMA_472M, args.cache))):
        model = load_model(name, device=args.device)
        label = "SmolLM2-135M" if name == "smollm2-135m" else f"Llama {LLAMA_472M.n_params / 1e6:.0f}M"
        table += [(label, *row) for row in measure(model, args.repeats)]
        del model
    log.info("threads %d, device %s", torch.get_num_threads(), args.device)
    log.info("| model | rule | statistics s | floor s | × floor |")
    log.info("|---|---|---|---|---|")
    for label, rule, stats, floor in table:
        log.info("| %s | %s | %.2f | %.3f | %.1f |", label, rule, stats, floor, stats / floor)


if __name__ == "__main__":
    main()
