"""The big-model figures of the GPU check: an 8B model from the Hugging Face cache, or else
the largest config-built one asked for (7B-shaped layers, random weights, bf16), on CUDA.

Load time (safetensors to the GPU, through the bridge), scan and intervention latency on a
--tokens prompt (medians), weight statistics of every tensor under the sigma rule against
the sum + sum-of-squares floor (`bench_weights.py`), and peak GPU memory. With
--device-map the model is spread over the box's GPUs (`OUTLIER_LAB_DEVICE_MAP`'s values).

    .venv/bin/python bench/bench_big_model.py [--device cuda] [--layers 32] [--tokens 128] [--device-map auto]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from pathlib import Path

import torch
from random_models import LlamaShape, saved_llama
from timing import prompt_of, timed

from outlier_core.intervene.evaluate import evaluate
from outlier_core.intervene.interventions import Intervention
from outlier_core.load.models import load_model
from outlier_core.load.placement import parse_device_map
from outlier_core.load.tokens import encode
from outlier_core.observe.capture import scan_encoded
from outlier_core.observe.tensor_stats import WeightRule
from outlier_core.observe.weights import KINDS, model_parameters, model_weight_stats

log = logging.getLogger("bench")

CACHED_8B = ("meta-llama/Llama-3.1-8B", "meta-llama/Meta-Llama-3.1-8B", "meta-llama/Llama-3.1-8B-Instruct",
             "meta-llama/Meta-Llama-3-8B", "Qwen/Qwen2.5-7B", "mistralai/Mistral-7B-v0.1")


def cached_8b() -> str | None:
    """The first of the usual 8B ids whose snapshot is in the local Hugging Face cache."""
    from huggingface_hub import snapshot_download

    for repo in CACHED_8B:
        try:
            snapshot_download(repo, local_files_only=True)
            return repo
        except (OSError, ValueError):  # not cached, or the hub is offline: try the next
            continue
    return None


def floor_pass(tensors: list[torch.Tensor]) -> None:
    for t in tensors:
        t.sum()
        torch.linalg.vector_norm(t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--device-map", default=None, help="spread over devices instead: auto, balanced or a JSON map")
    parser.add_argument("--layers", type=int, default=32, help="layers of the config-built model (32: Llama-2-7B)")
    parser.add_argument("--d-model", type=int, default=4096)
    parser.add_argument("--d-ffn", type=int, default=11008)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/outlier-lab-bench"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)  # gpu_check.sh keeps stdout as its figures
    torch.set_grad_enabled(False)
    on_cuda = args.device.startswith("cuda")
    name = cached_8b()
    if name is None:
        shape = LlamaShape(args.d_model, args.d_ffn, args.layers, args.heads, args.heads)
        dtype = torch.bfloat16 if on_cuda else torch.float32
        name = str(saved_llama(shape, args.cache, dtype=dtype, device=args.device if not args.device_map else "cpu"))
        log.info("no 8B model in the Hugging Face cache: a config-built %.2f B-parameter Llama", shape.n_params / 1e9)
    placement = parse_device_map(args.device_map)
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    loaded = {}

    def load() -> None:
        loaded["model"] = load_model(name, device=None if placement else args.device, placement=placement)

    seconds = {"load": timed(load, args.device)}
    model = loaded["model"]
    text = prompt_of(model, args.tokens)
    encoded = encode(model, text)
    scan_encoded(model, encoded)  # warm-up
    seconds["scan"] = statistics.median(timed(lambda: scan_encoded(model, encoded), args.device) for _ in range(args.repeats))
    iv = [Intervention(model.n_layers // 2, 0, "all", "zero")]
    evaluate(model, text, iv)
    seconds["intervene"] = statistics.median(timed(lambda: evaluate(model, text, iv), args.device) for _ in range(args.repeats))
    tensors = [p.tensor.detach() for p in model_parameters(model, KINDS)]
    floor_pass(tensors)
    seconds["floor"] = min(timed(lambda: floor_pass(tensors), args.device) for _ in range(3))
    seconds["weight stats"] = timed(lambda: model_weight_stats(model, WeightRule("sigma", 3), kinds=KINDS), args.device)
    n_params = sum(t.numel() for t in tensors)
    peak = torch.cuda.max_memory_allocated() / 2**30 if on_cuda else float("nan")
    log.info("model %s: %.2f B parameters, %s, %s, %d-token prompt", name, n_params / 1e9, model.dtype, model.devices or model.device, args.tokens)
    log.info("| load s | scan s | intervene s | weight stats s | × floor | peak GPU GiB |")
    log.info("|---|---|---|---|---|---|")
    log.info("| %.1f | %.3f | %.3f | %.1f | %.1f | %.1f |", seconds["load"], seconds["scan"], seconds["intervene"],
             seconds["weight stats"], seconds["weight stats"] / seconds["floor"], peak)


if __name__ == "__main__":
    main()
