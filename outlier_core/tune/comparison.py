"""Short causal-LM fine-tunes of a mask and its baselines, measured the same way.

One comparison: the data is packed into fixed blocks (BOS + seq_len-1 tokens) and split
into train and held-out blocks once; the base model is evaluated and scanned once; then
each method (the mask, then the chosen baselines) trains from the same base with the same
seed and the same batches, is evaluated and scanned, and the model is put back exactly as
it was. Everything lands under the comparison's folder:

    FOLDER/comparison.json                 config, data, base evaluation and scan, every run
    FOLDER/<method>/run.json               one run: curve, evaluation, memory, speed, scan after
    FOLDER/<method>/mask.json|.safetensors the coordinates it trained (coordinate methods)
    FOLDER/<method>/deltas.safetensors     its trained state (sparse: index + values; LoRA: A, B;
                                           full: the tuned weights, as large as the model)
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from outlier_core.contract import to_json, write_json
from outlier_core.errors import InputError
from outlier_core.load.models import LoadedModel
from outlier_core.select.masks import MaskSummary, SelectionMask
from outlier_core.tune.checkpointing import checkpoints_blocks
from outlier_core.tune.distributed import SINGLE, World
from outlier_core.tune.evaluation import RunLoss, held_out_loss
from outlier_core.tune.jobs import JobContext
from outlier_core.tune.methods import BASELINES, get_method
from outlier_core.tune.methods.base import TuningMethod
from outlier_core.tune.snapshot import OutlierSnapshot, block_encoded, outlier_snapshot
from outlier_core.tune.train_data import DataSummary, TokenData, TrainConfig
from outlier_core.tune.training import RunResult, run_method, stop_check

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepReport:
    method: str
    method_index: int  # 0-based among the comparison's methods
    n_methods: int
    step: int  # 1-based within the method
    steps: int
    loss: float
    tokens_per_s: float


@dataclass(frozen=True)
class Comparison:
    """A comparison, as FOLDER/comparison.json and a fine-tune job's result hold it."""

    folder: str
    mask: MaskSummary  # no indices: each method's folder holds the coordinates it trained
    config: TrainConfig
    data: DataSummary
    eval_before: RunLoss
    outliers_before: OutlierSnapshot
    runs: tuple[RunResult, ...]


@dataclass(frozen=True)
class ComparisonPlan:
    """A comparison checked against a model, ready to run on it (or on a copy of it)."""

    mask: SelectionMask
    methods: tuple[TuningMethod, ...]  # the mask first, then the baselines (or the methods asked for)
    data: TokenData
    config: TrainConfig

    @property
    def total_steps(self) -> int:
        return len(self.methods) * self.config.steps


def plan_comparison(
    model: LoadedModel,
    mask: SelectionMask,
    baselines: tuple[str, ...],
    data: TokenData,
    config: TrainConfig,
    mask_field: str = "mask",
    methods: tuple[str, ...] | None = None,
) -> ComparisonPlan:
    """Everything a comparison can check before it trains, checked once: the mask fits the
    model and selects something (an error names `mask_field`), the baselines exist, and
    blocks can be checkpointed where `config.checkpoint` asks for it. `methods`, when
    given, are trained in place of the mask then the baselines (each sized by the mask)."""
    mask.validate(model)
    if mask.count == 0:
        raise InputError(mask_field, f"mask {mask.name!r} selects no coordinates")
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise InputError("baseline", f"unknown baseline {unknown[0]!r}; choose from {', '.join(BASELINES)}")
    names = dict.fromkeys(methods) if methods is not None else ("mask", *dict.fromkeys(baselines))
    tunings = tuple(get_method(name, field="methods") for name in names)
    for method in tunings:
        checkpoints_blocks(model, method, config)  # a model that cannot checkpoint fails here, before any training
    return ComparisonPlan(mask, tunings, data, config)


def run_comparison(
    model: LoadedModel,
    plan: ComparisonPlan,
    folder: str | Path,
    progress: Callable[[StepReport], None] = lambda report: None,
    should_stop: Callable[[], bool] = lambda: False,
    world: World = SINGLE,
) -> Comparison:
    """Fine-tune each of the plan's methods from the same base; write everything under `folder`
    (over a `world` of processes, each rank trains on its shard and the main rank writes)."""
    folder = Path(folder)
    if world.is_main:
        folder.mkdir(parents=True, exist_ok=True)
    data, config, n = plan.data, plan.config, len(plan.methods)
    eval_before = held_out_loss(model, data.held_out, config.batch_size, stop_check(should_stop, world), data.held_out_labels, world)
    scan_prompt = block_encoded(model, data.scan_block)
    outliers_before = outlier_snapshot(model, scan_prompt)
    runs: list[RunResult] = []
    for index, method in enumerate(plan.methods):
        log.info("fine-tuning %s (%d/%d)", method.name, index + 1, n)

        def report(step: int, loss: float, tokens_per_s: float, method: str = method.name, index: int = index) -> None:
            progress(StepReport(method, index, n, step, config.steps, loss, tokens_per_s))

        runs.append(run_method(model, method, plan.mask, data, config, folder / method.name, eval_before, scan_prompt, report, should_stop, world))
        comparison = Comparison(str(folder), plan.mask.summary(), config, data.summary, eval_before, outliers_before, tuple(runs))
        if world.is_main:
            write_json(folder / "comparison.json", comparison)
    return comparison


def compare(
    model: LoadedModel,
    mask: SelectionMask,
    baselines: tuple[str, ...],
    data: TokenData,
    config: TrainConfig,
    folder: str | Path,
    progress: Callable[[StepReport], None] = lambda report: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Comparison:
    """Fine-tune the mask, then each baseline, from the same base; write everything under `folder`."""
    return run_comparison(model, plan_comparison(model, mask, baselines, data, config), folder, progress, should_stop)


def run_job(model: LoadedModel, plan: ComparisonPlan, ctx: JobContext) -> dict:
    """A checked comparison as a job's work: progress to `ctx`, files into the job's folder."""

    def progress(r: StepReport) -> None:
        phase = f"{r.method} ({r.method_index + 1}/{r.n_methods})"
        ctx.report(r.method_index * r.steps + r.step, r.n_methods * r.steps, r.loss, r.tokens_per_s, phase)

    ctx.report(0, plan.total_steps, phase="evaluating the base model")
    return to_json(run_comparison(model, plan, ctx.folder, progress, ctx.cancelled))


def comparison_job(
    model: LoadedModel,
    mask: SelectionMask,
    baselines: tuple[str, ...],
    data: TokenData,
    config: TrainConfig,
    lock: AbstractContextManager | None = None,
) -> Callable[[JobContext], dict]:
    """A `work(ctx)` for `jobs.JobRunner.submit`: the comparison, checked now, written into the job's folder.

    `lock` (e.g. the API's model lock) is held for the whole job: the model carries the
    trained deltas while a method runs. A server that must keep answering meanwhile can
    give the job a model of its own instead (`plan_comparison`, then `run_job` on the copy).
    """
    plan = plan_comparison(model, mask, baselines, data, config)

    def work(ctx: JobContext) -> dict:
        with lock or nullcontext():
            return run_job(model, plan, ctx)

    return work
