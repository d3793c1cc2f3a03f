"""How every cost grows with model size: config-built Llamas from SmolLM2-shaped to 7B-shaped layers.

For each size (random weights, saved once under --cache as a Hugging Face folder): load
(safetensors + bridge), one forward pass, scan, intervention with evaluation on the
prompt, weight statistics of every tensor (sigma rule), mask suggestion (budget 4096) and
one sparse fine-tune step on that mask, each relative to the forward pass, and the growth
exponent of every cost: the least-squares slope of log(seconds) against log(parameters).
A slope of 1 is linear growth. The slope is taken twice: against all parameters, and
against the blocks' alone (the small sizes are mostly embedding, which a scan never
multiplies by); a cost grows faster than the model only if both exceed 1.1. Prompts are
short (--tokens) and the big sizes have few layers, so the run fits a 2-core CPU in
minutes; each figure is the best of --repeats. Every file of a size is read once before its
load is timed, so the load reads from the page cache, not the disk.

    .venv/bin/python bench/bench_scale.py [--tokens 32] [--repeats 2] [--threads 1] [--cache /tmp/outlier-lab-bench]
"""

from __future__ import annotations

import argparse
import gc
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from random_models import LlamaShape, saved_llama
from timing import prompt_of, timed

from outlier_core.intervene.corpus import from_text
from outlier_core.intervene.evaluate import evaluate
from outlier_core.intervene.interventions import Intervention
from outlier_core.load.models import load_model
from outlier_core.load.tokens import encode
from outlier_core.observe.capture import scan_encoded
from outlier_core.observe.tensor_stats import WeightRule
from outlier_core.observe.weights import KINDS, model_weight_stats
from outlier_core.select.mask_rules import suggest_mask
from outlier_core.tune import train_data
from outlier_core.tune.sparse import SparseTuner
from outlier_core.tune.training import train

log = logging.getLogger("bench")

SHAPES = (  # n_params counts untied embeddings of a 32,000-token vocabulary
    LlamaShape(d_model=576, d_ffn=1536, n_layers=4, n_heads=9, n_kv_heads=3),  # SmolLM2-135M's layers
    LlamaShape(d_model=1024, d_ffn=2816, n_layers=4, n_heads=16, n_kv_heads=16),
    LlamaShape(d_model=2048, d_ffn=5632, n_layers=4, n_heads=16, n_kv_heads=16),
    LlamaShape(d_model=4096, d_ffn=11008, n_layers=2, n_heads=32, n_kv_heads=32),  # Llama-2-7B's layers
)
OPERATIONS = ("load", "forward", "scan", "intervene", "weight stats", "mask suggest", "fine-tune step")
BUDGET = 4096


def best(fn: Callable[[], object], repeats: int) -> float:
    return min(timed(fn) for _ in range(repeats))


def finetune_step(model, mask, text: str, tokens: int) -> None:
    """One AdamW step of the sparse method on the mask, batch 1 × `tokens`."""
    config = train_data.TrainConfig(steps=1, batch_size=1, seq_len=tokens, lr=1e-3)
    data = train_data.make_data(model, from_text(text * 4), config)
    for p in model.hf_model.parameters():
        p.requires_grad_(False)
    with SparseTuner(model, mask) as tuner:
        train(model, tuner, train_data.batches(data, config), config, config.lr, lambda *a: None, lambda: False, tuner.lean_backward)


def load_and_read(folder: Path):
    """The model through the bridge, every weight read once: safetensors are memory-mapped, and
    a load that never touches them would defer its cost to the first forward pass."""
    model = load_model(str(folder), device="cpu")
    with torch.no_grad():
        for p in model.hf_parameters().values():
            p.sum()
    return model


def read_files(folder: Path) -> None:
    """Read every file of the folder once, so that the load timed next reads from the page
    cache, not the disk: a disk read would measure the machine's disk, not the load."""
    for path in folder.iterdir():
        with path.open("rb") as f:
            while f.read(1 << 26):
                pass


def measure(shape: LlamaShape, cache: Path, tokens: int, repeats: int) -> dict[str, float]:
    folder = saved_llama(shape, cache)
    read_files(folder)
    seconds = {"load": best(lambda: load_and_read(folder), 1)}
    model = load_and_read(folder)
    text = prompt_of(model, tokens)
    encoded = encode(model, text)
    with torch.inference_mode():
        seconds["forward"] = best(lambda: model.bridge(encoded.ids, return_type="logits"), repeats)
    seconds["scan"] = best(lambda: scan_encoded(model, encoded), repeats)
    iv = [Intervention(model.n_layers // 2, 0, "all", "zero")]
    seconds["intervene"] = best(lambda: evaluate(model, text, iv), repeats)
    seconds["weight stats"] = best(lambda: model_weight_stats(model, WeightRule("sigma", 3), kinds=KINDS), repeats)
    suggestion = suggest_mask(model, encoded, BUDGET)
    seconds["mask suggest"] = best(lambda: suggest_mask(model, encoded, BUDGET), repeats)
    seconds["fine-tune step"] = best(lambda: finetune_step(model, suggestion.mask, text, tokens), repeats)
    log.info("%s: %s", shape.label, ", ".join(f"{k} {v:.3f} s" for k, v in seconds.items()))
    return seconds


def slope(params: list[int], values: list[float]) -> float:
    """Least-squares slope of log(value) against log(params)."""
    return float(np.polyfit(np.log(params), np.log(values), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/outlier-lab-bench"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("outlier_core").setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_and_read(saved_llama(SHAPES[0], args.cache))  # warm-up: imports and first-call costs stay out of the first size
    rows = []
    for shape in SHAPES:
        rows.append((shape, measure(shape, args.cache, args.tokens, args.repeats)))
        gc.collect()  # the bridge holds reference cycles: free the model before the next size loads
    params = [shape.n_params for shape, _ in rows]
    log.info("threads %d, %d-token prompt; seconds, and × one forward pass", torch.get_num_threads(), args.tokens)
    log.info("| model | params | " + " | ".join(OPERATIONS) + " |")
    log.info("|---|---:|" + "---:|" * len(OPERATIONS))
    for shape, seconds in rows:
        cells = [f"{seconds[op]:.3f} s ({seconds[op] / seconds['forward']:.1f}×)" if op != "forward" else f"{seconds[op]:.3f} s" for op in OPERATIONS]
        log.info("| %s | %.0f M | %s |", shape.label, shape.n_params / 1e6, " | ".join(cells))
    exponents = [slope(params, [seconds[op] for _, seconds in rows]) for op in OPERATIONS]
    log.info("| growth exponent | | %s |", " | ".join(f"{e:.2f}" for e in exponents))
    # the small sizes are mostly embedding, which a scan never multiplies by: against the blocks' parameters too
    block_exponents = [slope([shape.block_params for shape, _ in rows], [seconds[op] for _, seconds in rows]) for op in OPERATIONS]
    log.info("| growth exponent against block parameters | | %s |", " | ".join(f"{e:.2f}" for e in block_exponents))
    per_param = {op: [seconds[op] / n for (_, seconds), n in zip(rows, params)] for op in ("load", "weight stats")}
    for op, values in per_param.items():
        log.info("%s: %s ns per parameter", op, ", ".join(f"{v * 1e9:.1f}" for v in values))
    faster = [op for op, e, b in zip(OPERATIONS, exponents, block_exponents) if min(e, b) > 1.1]
    log.info("faster than linear in both (exponent > 1.1): %s", ", ".join(faster) if faster else "none")


if __name__ == "__main__":
    main()
