"""Weight statistics of every tensor against the memory-bound floor, in one run.

Budget (issue 14): statistics of every norm, matrix and embedding under one rule take at
most 5x one plain pass that computes the sum and the sum of squares of every weight
(`t.sum()` and `torch.linalg.vector_norm(t)`, both reductions without copies). Measured on
SmolLM2-135M and on a config-built 472M-parameter Llama (d_model 2048, FFN 5632, 6 layers,
vocab 40,000, random weights, saved once under --cache). The two alternate; medians.

Beside them, one step of the statistics alone: counting every entry into its order-key
bucket (`order_stats.BucketCounter`, the bincount no reduction can stand in for), to show
how much of the 5x one step that an exact answer needs already takes. With --fused, also
pass 1's reductions (range, sum, three power sums, row and column sums of squares) as one
`torch.compile`d kernel per tensor: what the best fused pass 1 would cost before it counts
a single bucket (compiled once, with dynamic shapes, before timing).

    .venv/bin/python bench/bench_weights.py [--repeats 3] [--threads N] [--device cpu] [--fused] [--cache /tmp/outlier-lab-bench]
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
from outlier_core.observe.order_stats import BucketCounter, as_key, chunk_length, key_bits, key_dtype, scratch
from outlier_core.observe.tensor_stats import WeightRule
from outlier_core.observe.weights import KINDS, model_parameters, model_weight_stats

log = logging.getLogger("bench")

LLAMA_472M = LlamaShape(d_model=2048, d_ffn=5632, n_layers=6, n_heads=16, n_kv_heads=16, vocab=40000)
RULES = (WeightRule("sigma", 3), WeightRule("percentile", 99), WeightRule("mad", 3))


def floor_pass(tensors: list[torch.Tensor]) -> None:
    for t in tensors:
        t.sum()
        torch.linalg.vector_norm(t)


def bucket_counting(tensors: list[torch.Tensor]) -> None:
    """Pass 1's bucket counts alone, as the statistics take them: chunk by chunk, every tensor."""
    for t in tensors:
        flat = t.reshape(-1)
        dtype = key_dtype(flat.dtype)
        chunk = min(chunk_length(flat.device), flat.numel())
        counter = BucketCounter(key_bits(flat.numel(), dtype), dtype, flat.device, chunk)
        keys = scratch(flat, chunk, dtype) if flat.dtype != dtype else None
        for start in range(0, flat.numel(), chunk):
            counter.add(as_key(flat[start:start + chunk], dtype, keys))
        counter.finish()


def _reductions(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """x: (rows, columns). Pass 1's reductions, to be fused into one kernel."""
    squared = x * x
    return x.amin(), x.amax(), x.sum(), squared.sum(), (squared * x).sum(), (squared * squared).sum(), squared.sum(1), squared.sum(0)


def fused_reductions(tensors: list[torch.Tensor], kernel) -> None:
    for t in tensors:
        kernel(t if t.ndim == 2 else t.reshape(1, -1))


def measure(model, repeats: int, fused: bool) -> list[tuple[str, float, float, float, float | None]]:
    """(rule, statistics s, floor s, bucket counting s, fused reductions s or None) per rule:
    medians over `repeats` alternating runs."""
    tensors = [p.tensor.detach() for p in model_parameters(model, KINDS)]
    log.info("%s: %d tensors, %.1f M entries", model.name, len(tensors), sum(t.numel() for t in tensors) / 1e6)
    kernel = torch.compile(_reductions, dynamic=True) if fused else None
    if kernel:
        fused_reductions(tensors, kernel)  # compiles
    rows = []
    for rule in RULES:
        model_weight_stats(model, rule, kinds=KINDS)  # warm-up
        stats, floor, counting, reductions = [], [], [], []
        for _ in range(repeats):
            floor.append(timed(lambda: floor_pass(tensors), model.device))
            stats.append(timed(lambda rule=rule: model_weight_stats(model, rule, kinds=KINDS), model.device))
            counting.append(timed(lambda: bucket_counting(tensors), model.device))
            if kernel:
                reductions.append(timed(lambda: fused_reductions(tensors, kernel), model.device))
        medians = [statistics.median(s) for s in (stats, floor, counting)]
        rows.append((f"{rule.kind} k={rule.k:g}", *medians, statistics.median(reductions) if kernel else None))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fused", action="store_true", help="also time pass 1's reductions as one torch.compile'd kernel")
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
        table += [(label, *row) for row in measure(model, args.repeats, args.fused)]
        del model
    log.info("threads %d, device %s", torch.get_num_threads(), args.device)
    log.info("| model | rule | statistics s | floor s | × floor | bucket counting alone × floor | fused reductions alone × floor |")
    log.info("|---|---|---|---|---|---|---|")
    for label, rule, stats, floor, counting, reductions in table:
        fused = f"{reductions / floor:.1f}" if reductions is not None else "not run"
        log.info("| %s | %s | %.2f | %.3f | %.1f | %.1f | %s |", label, rule, stats, floor, stats / floor, counting / floor, fused)


if __name__ == "__main__":
    main()
