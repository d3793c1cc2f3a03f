"""`outlier-lab finetune`: train only a mask's coordinates, and the baselines beside it.

    outlier-lab finetune --mask masks/outliers.json --baseline random ln lora full --steps 50
    outlier-lab finetune --mask masks/outliers.json --processes 2 --track tensorboard
    outlier-lab finetune --mask masks/outliers.json --processes 2 --shard fsdp

The run is a process of its own (`outlier_core.tune.run_main`, under torchrun for
--processes N); this command writes its config, starts it and follows its status file.
Progress goes to stderr; the comparison table (or, with --json, one object) to stdout.
Everything a run produces is written under --runs-dir, its log in run.log there. Ctrl-C
asks the run to stop at its next step and keeps what it trained.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from app.cli.common import CliError, add_model_arguments, emit_json, emit_lines, finite_float
from app.cli.mask_cmd import positive_int
from outlier_core.tune.methods import BASELINES
from outlier_core.tune.sharding import SHARDINGS
from outlier_core.tune.tracking import TRACKERS


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
    parser.add_argument(
        "--data", default=None,
        help="a text or JSONL file, or a bundled corpus (prose, code); or task data (prompt/completion or chat JSONL, a datasets folder, "
        "the bundled outlier_reviews), trained on the completion tokens only; default: prose",
    )
    parser.add_argument("--runs-dir", default="runs", help="where runs are written (default: %(default)s)")
    parser.add_argument(
        "--processes", type=positive_int, default=None,
        help="data-parallel processes, each a shard of every batch (default: one per GPU on CUDA, one on CPU)",
    )
    parser.add_argument(
        "--shard", choices=SHARDINGS, default=None,
        help="fsdp: shard the model over the processes (FSDP2) for a model larger than one device; trains the mask alone (default: each process holds the whole model)",
    )
    parser.add_argument("--track", choices=TRACKERS, default=None, help="log curves and results offline under the run's tracking/ folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def table(comparison: dict) -> list[str]:
    head = f"{'run':<16} {'trainable':>11} {'changed':>11} {'train loss':>15} {'ppl before':>10} {'ppl after':>10} {'peak MB':>8} {'ckpt':>4} {'optim B':>11} {'s':>7} {'tok/s':>7}"
    lines = [head]
    for r in comparison["runs"]:
        curve = f"{r['train_loss'][0]:.3f}→{r['train_loss'][-1]:.3f}"
        lines.append(
            f"{r['name'][:16]:<16} {r['trainable']:>11,} {r['changed']:>11,} {curve:>15} {_number(r['eval_before']['perplexity']):>10} "
            f"{_number(r['eval_after']['perplexity']):>10} {r['peak_memory_mb']:>8.1f} {'yes' if r['checkpointing'] else 'no':>4} "
            f"{r['optimizer_state_bytes']:>11,} {r['seconds']:>7.1f} {r['tokens_per_s']:>7.0f}"
        )
    lines += ["", "ckpt: block activations recomputed in the backward pass (--checkpoint)", f"written under {comparison['folder']}"]
    return lines


def _number(value: float | None) -> str:
    return "nan" if value is None else f"{value:.2f}"


def run(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from outlier_core.load.models import default_device
    from outlier_core.select.mask_files import load_mask
    from outlier_core.tune.distributed import default_processes
    from outlier_core.tune.run_config import RunConfig
    from outlier_core.tune.run_process import LaunchOptions, RunProcess, follow
    from outlier_core.tune.run_status import MEMORY_ENV, read_result
    from outlier_core.tune.train_data import TrainConfig, is_task, load_corpus

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
    mask = load_mask(args.mask)  # what can be checked without the model is checked here, before a process starts
    if not is_task(args.data):
        load_corpus(args.data)  # task data is read with the model's tokenizer, in the run
    baselines = tuple(dict.fromkeys(args.baseline))
    run_config = RunConfig(
        model=args.model, mask=str(Path(args.mask).expanduser().resolve()), baselines=baselines, train=config,
        data=_as_path(args.data), device=args.device, dtype=args.dtype,
        processes=args.processes or default_processes(args.device or default_device(), config.batch_size), track=args.track,
        shard=args.shard,
    )
    slug = re.sub(r"[^a-z0-9]+", "-", mask.name.lower()).strip("-") or "mask"
    folder = Path(f"{args.runs_dir}/{time.strftime('%Y%m%d-%H%M%S')}-{slug}")
    memory = os.environ.get(MEMORY_ENV)
    process = RunProcess.launch(folder, run_config, LaunchOptions(memory_mb=int(memory) if memory else None))
    with _stop_on_interrupt() as stop, tqdm(total=config.steps * (1 + len(baselines)), file=sys.stderr, unit="step") as bar:

        def progress(status) -> None:
            bar.set_description(status.phase or "")
            if status.loss is not None:
                bar.set_postfix(loss=f"{status.loss:.3f}", tok_s=f"{status.tokens_per_s or 0:.0f}")
            bar.update(status.step - bar.n)

        final = follow(process, progress, stop.is_set)
    if final.state == "failed":
        if final.field is not None:
            raise CliError(f"--{final.field.replace('_', '-')}: {final.error.removeprefix(final.field + ': ')}")
        sys.stderr.write(f"outlier-lab finetune: the run failed: {final.error}\n(its log: {folder / 'run.log'})\n")
        raise SystemExit(1)
    if final.state == "cancelled":
        sys.stderr.write(f"outlier-lab finetune: stopped; what it had trained is in {folder}\n")
        raise SystemExit(130)
    comparison = read_result(folder)
    emit_json(comparison) if args.json else emit_lines(table(comparison))


def _as_path(data: str | None) -> str | None:
    """A data file as an absolute path (the run reads it from its own folder); a bundled name as it is."""
    from outlier_core.intervene.corpus import BUNDLED
    from outlier_core.tune.task_data import BUNDLED_TASKS

    return data if data is None or data in BUNDLED or data in BUNDLED_TASKS else str(Path(data).expanduser().resolve())


@contextmanager
def _stop_on_interrupt() -> Iterator[threading.Event]:
    """Inside, Ctrl-C sets the event: the run (in a session of its own, so the terminal's
    SIGINT does not reach it) is asked to stop at its next step, and this command waits for it."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
