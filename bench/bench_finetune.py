"""Peak memory, step time and optimizer state of the sparse fine-tune against its baselines.

One run on the default model, batch and sequence fixed: the outlier-rule mask trimmed to
10k coordinates, LN-only, LoRA at the trainable count closest to the mask's, and full
fine-tuning. Targets (issue 5): optimizer-state bytes proportional to the selected
coordinates; sparse peak memory clearly below full fine-tuning and no higher than LoRA;
sparse step time no slower than full fine-tuning.

Each method runs as a fine-tune runs by default (`checkpoint=auto`: block activations are
recomputed in the backward pass for the coordinate tunings, not for LoRA and full), and
once with the other setting, so the table also compares every method on an equal footing.

Each method runs in a fresh process, so one method's freed memory cannot hide the next
one's peak (on the CPU the peak is the growth of the process's peak RSS; on CUDA the
allocator's peak above the loaded model).

    .venv/bin/python bench/bench_finetune.py [--model smollm2-135m] [--device cpu] [--budget 10000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = ("mask", "ln", "lora", "full")
CASES = tuple((method, setting) for method in METHODS for setting in ("auto", "flip"))  # flip: the other of on/off


def measure(args: argparse.Namespace) -> dict:
    """One method in this process: warm-up step included in the peak, step time from the rest."""
    import functools

    import torch

    from outlier_core.load.models import load_model
    from outlier_core.select.masks import load_mask
    from outlier_core.tune import train_data
    from outlier_core.tune.checkpointing import block_checkpointing, checkpoints_blocks
    from outlier_core.tune.memory import PeakMemory
    from outlier_core.tune.methods import get_method
    from outlier_core.tune.training import train

    model = load_model(args.model, device=args.device)
    mask = load_mask(args.mask)
    method = get_method(args.one)
    config = train_data.TrainConfig(steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len)
    if args.checkpoint == "flip":
        flipped = "off" if checkpoints_blocks(model, method, config) else "on"
        config = dataclasses.replace(config, checkpoint=flipped)
    data = train_data.make_data(model, train_data.load_corpus(), config)
    for p in model.hf_model.parameters():
        p.requires_grad_(False)
    attached = method.attach(model, mask, config)
    checkpointing = checkpoints_blocks(model, method, config)
    stamps: list[float] = []

    def stamp(step: int, loss: float, tokens_per_s: float) -> None:
        if model.device.startswith("cuda"):
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    lean = functools.partial(method.lean_backward, attached.tuning)
    with PeakMemory(model.device) as memory, block_checkpointing(model, checkpointing):
        start = time.perf_counter()
        steps = train_data.batches(data, config)
        _, state_bytes, _, _ = train(model, attached.tuning, steps, config, method.learning_rate(config), stamp, lambda: False, lean)
    step_times = [b - a for a, b in zip([start, *stamps], stamps)][1:]  # the first step allocates the optimizer state
    return {
        "name": attached.name,
        "method": args.one,
        "default": args.checkpoint == "auto",
        "checkpointing": checkpointing,
        "trainable": attached.tuning.trainable,
        "optimizer_state_bytes": state_bytes,
        "peak_memory_mb": memory.peak_mb,
        "step_s": statistics.median(step_times),
        **{k: v for k, v in attached.details.items() if k == "lora_rank"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default=None)
    parser.add_argument("--budget", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--one", choices=METHODS, help=argparse.SUPPRESS)  # internal: measure one method
    parser.add_argument("--mask", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", choices=("auto", "flip"), default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        sys.stdout.write(json.dumps(measure(args)) + "\n")
        return

    from outlier_core.intervene.corpus import bundled
    from outlier_core.load.models import load_model
    from outlier_core.select import mask_rules

    model = load_model(args.model, device=args.device)
    prompt = mask_rules.prompt_from_text(model, bundled().text, True, 128)
    mask = mask_rules.suggest_mask(model, prompt, args.budget, name=f"outlier rules {args.budget}").mask
    device = model.device
    del model
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        mask_path, _ = mask.save(Path(folder) / "mask.json")
        for method, setting in CASES:
            command = [sys.executable, __file__, "--one", method, "--checkpoint", setting, "--mask", str(mask_path), "--model", args.model, "--device", device,
                       "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    sys.stdout.write(
        f"{args.model} on {device}; batch {args.batch_size} x {args.seq_len} tokens; {args.steps} steps, median step time of steps 2-{args.steps}\n"
        f"mask: {mask.count:,} coordinates by the outlier rules\n\n"
        f"{'method':<22} {'checkpointing':>13} {'trainable':>12} {'optimizer state':>16} {'bytes/trainable':>16} {'peak MB':>9} {'step s':>8}\n"
    )
    for row in rows:
        setting = ("yes" if row["checkpointing"] else "no") + (" (default)" if row["default"] else "")
        sys.stdout.write(
            f"{row['name'][:22]:<22} {setting:>13} {row['trainable']:>12,} {row['optimizer_state_bytes']:>16,} "
            f"{row['optimizer_state_bytes'] / row['trainable']:>16.2f} {row['peak_memory_mb']:>9.1f} {row['step_s']:>8.3f}\n"
        )
    by = {(r["method"], r["default"]): r for r in rows}
    sparse, lora, full = by["mask", True], by["lora", True], by["full", True]
    sys.stdout.write(
        f"\nas run by default: sparse peak / LoRA peak {sparse['peak_memory_mb'] / lora['peak_memory_mb']:.2f}, "
        f"sparse peak / full peak {sparse['peak_memory_mb'] / full['peak_memory_mb']:.2f}, "
        f"sparse step / full step {sparse['step_s'] / full['step_s']:.2f}\n"
    )
    even = {m: next(r for r in rows if r["method"] == m and r["checkpointing"]) for m in ("mask", "lora", "full")}
    sys.stdout.write(
        f"all checkpointed: sparse peak / LoRA peak {even['mask']['peak_memory_mb'] / even['lora']['peak_memory_mb']:.2f}, "
        f"sparse peak / full peak {even['mask']['peak_memory_mb'] / even['full']['peak_memory_mb']:.2f}\n"
    )


if __name__ == "__main__":
    main()
