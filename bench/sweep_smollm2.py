"""The research question on the default model: outlier-rule masks against random masks,
SHiRA, LoRA and the top LN entries at equal budgets, over seeds, on the bundled task.

A real sweep (`outlier_core.tune.sweep`): SmolLM2-135M-Instruct, the bundled
outlier_reviews task (completion-only loss), budgets × methods × seeds, each trial a run
process scored by lm-eval on the task's held-out items. Scaled to finish in well under an
hour on 2 shared CPU cores (see README, "Does the outlier mask win?"): few steps, the
first N held-out items, one learning rate for every method, no full fine-tune.

Resumable: run it again with the same --out and finished trials are reused. Writes the
summary and the Pareto plots under OUT/<sweep id>/ and copies the table and the plots into
docs/ (NAME.md, NAME_pareto_*.png; NAME is --name).

    .venv/bin/python bench/sweep_smollm2.py [--out runs/sweep_smollm2] [--seeds 0,1,2] [--steps 8]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    from outlier_core.tune.sweep.config import SweepConfig
    from outlier_core.tune.sweep.runner import run_sweep
    from outlier_core.tune.train_data import TrainConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--budgets", default="256,4096")
    parser.add_argument("--methods", default="mask,random,shira,lora,ln_top")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-2, help="one rate for every method: few steps need a large one")
    parser.add_argument("--eval-items", type=int, default=64, help="held-out items scored by lm-eval and for the loss")
    parser.add_argument("--out", default=str(ROOT / "runs" / "sweep_smollm2"))
    parser.add_argument("--docs", default=str(ROOT / "docs"))
    parser.add_argument("--name", default="sweep_smollm2", help="the docs files' prefix")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    config = SweepConfig(
        model=args.model,
        budgets=tuple(int(b) for b in args.budgets.split(",")),
        methods=tuple(args.methods.split(",")),
        seeds=tuple(int(s) for s in args.seeds.split(",")),
        # checkpoint off for every method: the same activation policy, so memory and speed compare like for like
        train=TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, max_eval_blocks=args.eval_items, checkpoint="off"),
        eval_limit=args.eval_items,
        device="cpu",
    )
    start = time.perf_counter()
    outcome = run_sweep(args.out, config, report=lambda r: logging.info("%s b%d s%d: %s %s", r.method, r.budget, r.seed, r.state, r.metrics.get("outlier_reviews.acc")))
    minutes = (time.perf_counter() - start) / 60
    trained = sum(not t.reused for t in outcome.trials)
    logging.info("sweep %s: %s in %.1f min (%d trials trained, %d reused)", outcome.sweep, outcome.state, minutes, trained, len(outcome.trials) - trained)
    docs = Path(args.docs)
    table = Path(outcome.files["markdown"]).read_text(encoding="utf-8")
    header = (
        f"<!-- bench/sweep_smollm2.py: sweep {outcome.sweep}, {len(outcome.trials)} trials, {minutes:.0f} min for the {trained} trained in this run -->\n"
        f"{config.train.steps} steps of batch {config.train.batch_size}, lr {config.train.lr:g}, checkpoint off; "
        f"lm-eval and held-out loss on the first {args.eval_items} of the task's 160 held-out items; seeds {', '.join(map(str, config.seeds))}.\n\n"
    )
    (docs / f"{args.name}.md").write_text(header + table, encoding="utf-8")
    for name in ("pareto_trainable", "pareto_loss_trainable", "pareto_peak_memory_mb", "pareto_loss_peak_memory_mb"):
        shutil.copyfile(outcome.files[f"{name}.png"], docs / f"{args.name}_{name}.png")
    sys.stdout.write(header + table)
    return 0 if outcome.state == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
