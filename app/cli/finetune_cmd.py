"""`outlier-lab finetune`: train only a mask's coordinates, and the baselines beside it.

    outlier-lab finetune --mask masks/outliers.json --baseline random ln lora full --steps 50

Progress goes to stderr; the comparison table (or, with --json, one object) to stdout.
Everything a run produces is written under --runs-dir.
"""

from __future__ import annotations

import argparse
import re
import sys
import time

from app.cli.common import add_model_arguments, emit_json, emit_lines, finite_float
from app.cli.mask_cmd import positive_int
from outlier_core.tune.methods import BASELINES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--mask", required=True, help="MASK.json or MASK.safetensors")
    parser.add_argument("--baseline", nargs="+", action="extend", choices=BASELINES, default=[], metavar="NAME", help="random, ln, lora and/or full, trained after the mask")
    parser.add_argument("--steps", type=positive_int, default=50, help="optimizer steps per run (default: %(default)s)")
    parser.add_argument("--lr", type=finite_float, default=1e-3, help="learning rate of the sparse runs and LoRA (default: %(default)s)")
    parser.add_argument("--full-lr", type=finite_float, default=1e-4, help="learning rate of the full fine-tune (default: %(default)s)")
    parser.add_argument("--weight-decay", type=finite_float, default=0.01, help="AdamW weight decay on the trained values (default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=4, help="blocks per step (default: %(default)s)")
    parser.add_argument("--seq-len", type=positive_int, default=64, help="tokens per block, BOS included (default: %(default)s)")
    parser.add_argument("--lora-rank", type=positive_int, default=None, help="LoRA rank (default: the count closest to the mask's)")
    parser.add_argument(
        "--checkpoint", choices=("auto", "on", "off"), default="auto",
        help="recompute block activations in the backward pass: auto = for the mask, random and ln runs (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the batches and the random mask (default: %(default)s)")
    parser.add_argument("--data", default=None, help="a text or JSONL file, or a bundled corpus (prose, code); default: prose")
    parser.add_argument("--runs-dir", default="runs", help="where runs are written (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def table(comparison) -> list[str]:
    head = f"{'run':<16} {'trainable':>11} {'changed':>11} {'train loss':>15} {'ppl before':>10} {'ppl after':>10} {'peak MB':>8} {'ckpt':>4} {'optim B':>11} {'s':>7} {'tok/s':>7}"
    lines = [head]
    for r in comparison.runs:
        curve = f"{r.train_loss[0]:.3f}→{r.train_loss[-1]:.3f}"
        lines.append(
            f"{r.name[:16]:<16} {r.trainable:>11,} {r.changed:>11,} {curve:>15} {r.eval_before.perplexity:>10.2f} "
            f"{r.eval_after.perplexity:>10.2f} {r.peak_memory_mb:>8.1f} {'yes' if r.checkpointing else 'no':>4} {r.optimizer_state_bytes:>11,} {r.seconds:>7.1f} {r.tokens_per_s:>7.0f}"
        )
    lines += ["", "ckpt: block activations recomputed in the backward pass (--checkpoint)", f"written under {comparison.folder}"]
    return lines


def run(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from app.cli.common import load_model_for
    from outlier_core.contract import to_json
    from outlier_core.select.mask_files import load_mask
    from outlier_core.tune.comparison import compare
    from outlier_core.tune.train_data import TrainConfig, load_corpus, make_data

    config = TrainConfig(
        steps=args.steps,
        lr=args.lr,
        full_lr=args.full_lr,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        seed=args.seed,
        lora_rank=args.lora_rank,
        checkpoint=args.checkpoint,
    )
    mask = load_mask(args.mask)
    corpus = load_corpus(args.data)
    model = load_model_for(args)
    data = make_data(model, corpus, config)
    baselines = tuple(dict.fromkeys(args.baseline))
    slug = re.sub(r"[^a-z0-9]+", "-", mask.name.lower()).strip("-") or "mask"
    folder = f"{args.runs_dir}/{time.strftime('%Y%m%d-%H%M%S')}-{slug}"
    with tqdm(total=config.steps * (1 + len(baselines)), file=sys.stderr, unit="step") as bar:

        def progress(report) -> None:
            bar.set_description(report.method)
            bar.set_postfix(loss=f"{report.loss:.3f}", tok_s=f"{report.tokens_per_s:.0f}")
            bar.update(1)

        comparison = compare(model, mask, baselines, data, config, folder, progress)
    emit_json(to_json(comparison)) if args.json else emit_lines(table(comparison))
