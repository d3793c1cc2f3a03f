"""The run process: one config in, one run folder out.

    python -m outlier_core.tune.run_main --config FOLDER/run_config.json
    torchrun --standalone --nproc_per_node=2 -m outlier_core.tune.run_main --config ...
    accelerate launch --multi_gpu --num_processes 2 -m outlier_core.tune.run_main --config ...

It loads the model, checks the mask and the data, trains the mask and the baselines
(`comparison.run_comparison`) and writes the folder; its progress and final state go to
FOLDER/status.json. SIGTERM (or SIGINT) asks for a stop: the run stops at its next step or
evaluation batch, keeps what it trained (`stopped.json` beside the deltas) and reads
`cancelled`. Under a launcher every rank trains its shard of each batch and rank 0 writes.

Exit status: 0 done or cancelled, 2 refused input (status names the field), 1 failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import signal
import sys
import threading
from pathlib import Path

from outlier_core.contract import finite, to_json, write_atomic
from outlier_core.errors import InputError
from outlier_core.tune.distributed import World, leave, world_from_env
from outlier_core.tune.run_config import RunConfig, config_json, read_config
from outlier_core.tune.run_status import MEMORY_ENV, MEMORY_SIGNS, RESULT_FILE, StatusWriter, memory_cap_message
from outlier_core.tune.training import Cancelled, stop_check

log = logging.getLogger("outlier_core.tune.run")

def cap_memory() -> int | None:
    """Apply the per-run cap the launcher passed (MB of address space, RLIMIT_AS) to this
    process; set here rather than in a `preexec_fn`, which is unsafe in a threaded server,
    and so each rank under a launcher has its own."""
    mb = os.environ.get(MEMORY_ENV)
    if not mb:
        return None
    limit = int(mb) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return int(mb)


class StopSignal:
    """SIGTERM and SIGINT set a flag that the training loop reads at its next step."""

    def __init__(self) -> None:
        self._event = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._set)

    def _set(self, signum, frame) -> None:
        log.info("asked to stop (%s): stopping at the next step", signal.Signals(signum).name)
        self._event.set()

    def __call__(self) -> bool:
        return self._event.is_set()


def train_run(config: RunConfig, folder: Path, world: World, status: StatusWriter, should_stop) -> dict:
    """Load, check, train, write: the comparison as JSON values."""
    from outlier_core.load.models import ModelNotAvailable, load_model
    from outlier_core.select.mask_files import load_mask
    from outlier_core.tune.comparison import StepReport, plan_comparison, run_comparison
    from outlier_core.tune.tracking import open_tracker
    from outlier_core.tune.train_data import load_data, make_data

    stop = stop_check(should_stop, world)
    status.update(phase="loading the model")
    try:
        model = load_model(config.model, device=world.device(config.device), dtype=config.dtype)
    except ModelNotAvailable as err:
        raise InputError("model", str(err)) from err
    except ValueError as err:  # the one a load raises for a dtype it does not know
        raise InputError("dtype", str(err)) from err
    stop()
    mask = config.recipe.build(model) if config.recipe is not None else load_mask(config.mask_path(folder))
    if config.data_text is not None:
        data = make_data(model, config.corpus(folder), config.train)
    else:
        data = load_data(model, config.data_source(folder), config.train)  # task rows or packed text
    world.check_batch(config.train.batch_size, int(data.train.shape[0]))
    if config.shard is not None:
        return sharded_run(config, model, mask, data, folder, world, status, should_stop)
    plan = plan_comparison(model, mask, tuple(config.baselines), data, config.train, methods=config.methods)
    tracker = open_tracker(config.track, folder, folder.name, config_json(config)) if config.track and world.is_main else None
    status.update(step=0, total=plan.total_steps, phase="evaluating the base model")

    def progress(r: StepReport) -> None:
        step = r.method_index * r.steps + r.step
        status.update(step=step, loss=r.loss, tokens_per_s=r.tokens_per_s, phase=f"{r.method} ({r.method_index + 1}/{r.n_methods})")
        if tracker is not None:
            tracker.log({f"{r.method}/train_loss": r.loss, f"{r.method}/tokens_per_s": r.tokens_per_s}, step=step)

    try:
        comparison = to_json(run_comparison(model, plan, folder, progress, should_stop, world))
        if config.eval_tasks and world.is_main:
            from outlier_core.tune.task_eval import score_runs

            status.update(phase="lm-eval")
            methods = [run["method"] for run in comparison["runs"]]
            comparison["lm_eval"] = score_runs(model, folder, methods, config.eval_tasks, config.eval_limit, stop, config.eval_base)
        if tracker is not None:
            tracker.log(run_metrics(comparison), step=plan.total_steps)
    finally:
        if tracker is not None:
            tracker.finish()
    return comparison


def sharded_run(config: RunConfig, model, mask, data, folder: Path, world: World, status: StatusWriter, should_stop) -> dict:
    """The mask trained on a model sharded over the processes (`sharded.run_sharded`)."""
    from outlier_core.tune.sharded import run_sharded

    status.update(step=0, total=config.train.steps, phase="evaluating the base model")

    def progress(step: int, loss: float, tokens_per_s: float) -> None:
        status.update(step=step, loss=loss, tokens_per_s=tokens_per_s, phase=f"mask, sharded over {world.size} ({config.shard})")

    return to_json(run_sharded(model, mask, data, config.train, folder, world, progress, should_stop))


def run_metrics(comparison: dict) -> dict[str, float]:
    """Each method's headline numbers, for a tracker."""
    metrics = {}
    for run in comparison["runs"]:
        for key in ("eval_before", "eval_after"):
            for stat in ("loss", "perplexity"):
                if run[key][stat] is not None:
                    metrics[f"{run['method']}/{key}_{stat}"] = run[key][stat]
        metrics[f"{run['method']}/trainable"] = run["trainable"]
        metrics[f"{run['method']}/peak_memory_mb"] = run["peak_memory_mb"]
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m outlier_core.tune.run_main", description="Train one run configuration into its folder.")
    parser.add_argument("--config", required=True, help="FOLDER/run_config.json")
    parser.add_argument("--folder", default=None, help="where the run is written (default: the config's folder)")
    args = parser.parse_args(argv)
    cap_mb = cap_memory()
    should_stop = StopSignal()
    config_path = Path(args.config)
    folder = Path(args.folder) if args.folder else config_path.parent
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=f"%(asctime)s %(levelname)s [rank {rank}] %(name)s: %(message)s")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    status = StatusWriter(folder, enabled=rank == 0)
    status.write()
    world = None
    try:
        config = read_config(config_path)
        world = world_from_env(config.device)
        comparison = train_run(config, folder, world, status, should_stop)
        if world.is_main:
            write_atomic(folder / RESULT_FILE, json.dumps(finite(comparison), allow_nan=False) + "\n")
        status.update(state="done", phase=None)
        return 0
    except InputError as err:
        log.error("refused: %s: %s", err.field, err.reason)
        status.update(state="failed", error=f"{err.field}: {err.reason}", field=err.field)
        return 2
    except Cancelled as err:
        log.info("cancelled: %s", err)
        status.update(state="cancelled")
        return 0
    except Exception as err:
        log.exception("the run failed")
        status.update(state="failed", error=failure_message(err, cap_mb))
        return 1
    finally:
        if world is not None:
            leave(world)


def failure_message(err: BaseException, cap_mb: int | None) -> str:
    text = f"{type(err).__name__}: {err}"
    if cap_mb is not None and (isinstance(err, MemoryError) or any(sign in text for sign in MEMORY_SIGNS)):
        return f"{memory_cap_message(cap_mb)}: {text}"
    return text


if __name__ == "__main__":
    sys.exit(main())
