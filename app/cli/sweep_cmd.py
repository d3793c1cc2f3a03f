"""`outlier-lab sweep`: a grid of budgets × methods × seeds (× mask-rule settings), each
trial a run process, stored in DIR/sweeps.sqlite; resumable by running it again.

    outlier-lab sweep --model smollm2-135m --budgets 256,4096 --methods mask,random,lora --seeds 0,1,2 --steps 30 --out sweeps
    outlier-lab sweep ... --rules super_weights,norm_outliers --rules norm_outliers --windows 0,2

The data defaults to the bundled task (outlier_reviews), scored after each trial by
lm-eval. Each trial's run folder lies under DIR/trials/; the summary (CSV, JSON, Markdown)
and the Pareto plots (PNG, SVG) under DIR/<sweep id>/. Finished trials are never trained
again: a second invocation reports them `reused`. Ctrl-C stops the running trial and the sweep.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path

from app.cli.common import add_model_arguments, emit_json, emit_lines, finite_float
from app.cli.mask_cmd import positive_int
from outlier_core.select import RULES
from outlier_core.tune.methods import METHODS

log = logging.getLogger("outlier_lab.sweep")


def int_list(value: str) -> tuple[int, ...]:
    try:
        numbers = tuple(int(v.replace("_", "")) for v in value.split(",") if v.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {value!r}") from err
    if not numbers:
        raise argparse.ArgumentTypeError("expected at least one number")
    return numbers


def name_list(choices: tuple[str, ...]):
    def parse(value: str) -> tuple[str, ...]:
        names = tuple(v.strip() for v in value.split(",") if v.strip())
        unknown = [n for n in names if n not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}; got {value!r}")
        return names

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--budgets", type=int_list, required=True, help="parameter budgets, e.g. 256,4096,32768")
    parser.add_argument("--methods", type=name_list(METHODS), required=True, help=f"methods, from {', '.join(METHODS)}")
    parser.add_argument("--seeds", type=int_list, default=(0,), help="seeds (default: 0)")
    parser.add_argument(
        "--rules", type=name_list(RULES), action="append", default=None, metavar="RULE,...",
        help="the rules that build the mask, in priority order; repeat for several settings (default: all four)",
    )
    parser.add_argument("--windows", type=int_list, default=(0,), help="layer windows n around the strongest norm outlier, crossed with --rules (default: 0)")
    parser.add_argument("--steps", type=positive_int, default=30, help="optimizer steps per trial (default: %(default)s)")
    parser.add_argument("--lr", type=finite_float, default=1e-3, help="learning rate of the sparse methods, SHiRA and LoRA (default: %(default)s)")
    parser.add_argument("--full-lr", type=finite_float, default=1e-4, help="learning rate of the full fine-tune (default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="rows per step (default: %(default)s)")
    parser.add_argument("--seq-len", type=positive_int, default=64, help="tokens per block of plain-text data (task rows are padded to the longest)")
    parser.add_argument("--held-out", type=positive_int, default=160, help="held-out rows (or blocks) scored for the loss (default: %(default)s)")
    parser.add_argument("--data", default=None, help="task data (JSONL prompt/completion or chat, a datasets folder) or text; default: the bundled task")
    parser.add_argument("--eval-tasks", type=lambda v: tuple(t for t in v.split(",") if t), default=None, help="lm-eval tasks after each trial (default: the bundled task)")
    parser.add_argument("--eval-limit", type=positive_int, default=None, help="score each lm-eval task's first items only")
    parser.add_argument("--out", default="sweeps", help="the sweep store: DIR/sweeps.sqlite, DIR/trials/, DIR/<sweep id>/ (default: %(default)s)")
    parser.add_argument("--concurrent", type=positive_int, default=None, help="trials at a time on this machine, each GPU's own on a GPU box (default: one per GPU there, else one)")
    parser.add_argument("--ray-address", default=None, help="run each trial as a Ray task on this cluster ('auto' for a running one)")
    parser.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNG/SVG Pareto plots")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def sweep_config(args: argparse.Namespace):
    from outlier_core.intervene.corpus import BUNDLED
    from outlier_core.tune.sweep.config import RuleSetting, SweepConfig
    from outlier_core.tune.task_data import BUNDLED_TASKS, DEFAULT_TASK
    from outlier_core.tune.train_data import TrainConfig

    data = args.data if args.data is None or args.data in BUNDLED or args.data in BUNDLED_TASKS else str(Path(args.data).expanduser().resolve())
    train = TrainConfig(
        steps=args.steps, lr=args.lr, full_lr=args.full_lr, batch_size=args.batch_size, seq_len=args.seq_len, max_eval_blocks=args.held_out,
    )
    settings = tuple(RuleSetting(rules, window) for rules in (args.rules or [RULES]) for window in args.windows)
    eval_tasks = args.eval_tasks if args.eval_tasks is not None else (DEFAULT_TASK,)
    return SweepConfig(
        model=args.model, budgets=args.budgets, methods=args.methods, seeds=args.seeds, settings=settings, train=train,
        data=data or DEFAULT_TASK, eval_tasks=eval_tasks, eval_limit=args.eval_limit, device=args.device, dtype=args.dtype,
    )


def run(args: argparse.Namespace) -> None:
    from outlier_core.contract import to_json
    from outlier_core.tune.run_process import LaunchOptions
    from outlier_core.tune.sweep.runner import run_sweep

    config = sweep_config(args)
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    memory = os.environ.get("OUTLIER_LAB_RUN_MEMORY_MB")

    def report(record) -> None:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in record.metrics.items() if not k.startswith("base.") and "." in k) or record.error or ""
        log.info("%s at budget %s, seed %s: %s %s", record.method, f"{record.budget:,}", record.seed, record.state, shown)

    try:
        outcome = run_sweep(
            args.out, config, LaunchOptions(memory_mb=int(memory) if memory else None), args.concurrent, args.ray_address, stop.is_set, report, args.plots,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    if args.json:
        emit_json(to_json(outcome))
        return
    done = sum(t.state == "done" for t in outcome.trials)
    reused = sum(t.reused for t in outcome.trials)
    markdown = Path(outcome.files["markdown"]).read_text(encoding="utf-8")
    emit_lines([f"sweep {outcome.sweep}: {outcome.state}; {done} of {len(outcome.trials)} trials done ({reused} reused)", "", markdown.rstrip(), "", *(f"{name}: {path}" for name, path in outcome.files.items())])
