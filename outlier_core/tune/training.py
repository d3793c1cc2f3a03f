"""One method's run: train it from the base model, measure it, save it, put the base back.

The loop speaks only to the method's interface (`methods.base`): it asks the method for
its tuning, its learning rate, its backward-pass context and its files, never which
method it is.
"""

from __future__ import annotations

import functools
import time
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Callable, Iterator

import torch
from pydantic import Field, SerializerFunctionWrapHandler, model_serializer

from outlier_core.contract import write_json
from outlier_core.load.models import LoadedModel
from outlier_core.load.tokens import Encoded
from outlier_core.select.masks import SelectionMask
from outlier_core.tune.checkpointing import block_checkpointing, checkpoints_blocks
from outlier_core.tune.distributed import SINGLE, World
from outlier_core.tune.evaluation import ForwardLoss, RunLoss, batch_loss, held_out_loss
from outlier_core.tune.memory import PeakMemory
from outlier_core.tune.methods.base import Tuning, TuningMethod
from outlier_core.tune.snapshot import OutlierSnapshot, outlier_snapshot
from outlier_core.tune.train_data import Batch, TokenData, TrainConfig, batches


class Cancelled(Exception):
    """Raised inside a run when its caller asked it to stop; `losses` holds the steps it had taken."""

    def __init__(self, losses: tuple[float, ...] = ()):
        super().__init__(f"stopped after {len(losses)} steps")
        self.losses = losses


@dataclass(frozen=True)
class StoppedRun:
    """A method's run stopped before it finished, as FOLDER/<method>/stopped.json holds it:
    its deltas as they were at the stop lie beside it; it has no evaluation after."""

    name: str
    method: str
    steps_done: int
    train_loss: tuple[float, ...]
    deltas: str


@dataclass(frozen=True)
class RunResult:
    """One method's run, as FOLDER/<method>/run.json holds it; the method's details sit beside
    the other fields there: mask_count (mask, random), lora_rank and lora_targets (lora)."""

    name: str
    method: str
    lr: float
    trainable: int
    changed: int
    train_loss: tuple[float, ...]
    eval_before: RunLoss
    eval_after: RunLoss
    peak_memory_mb: float
    optimizer_state_bytes: int
    tokens_per_s: float
    seconds: float  # training wall time (evaluation and scans excluded)
    deltas: str | None  # file name inside the run folder, None when not written
    outliers_after: OutlierSnapshot
    checkpointing: bool  # block activations recomputed in the backward pass
    details: Annotated[dict, Field(exclude=True)] = field(default_factory=dict)  # written by the serializer below

    # No return annotation: the documented shape stays the fields' own.
    @model_serializer(mode="wrap")
    def _details_beside_the_fields(self, handler: SerializerFunctionWrapHandler):
        return {**handler(self), **self.details}


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(t.numel() * t.element_size() for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t))


def train(
    model: LoadedModel,
    tuning: Tuning,
    steps: Iterator[Batch],
    config: TrainConfig,
    lr: float,
    report: Callable[[int, float, float], None],
    should_stop: Callable[[], bool],
    lean_backward: Callable[[], AbstractContextManager] = nullcontext,
    world: World = SINGLE,
    forward_loss: ForwardLoss | None = None,
) -> tuple[list[float], int, int, float]:
    """AdamW over the tuning's parameters only (the caller freezes the rest); each step's
    forward and backward pass run inside a fresh `lean_backward()`, through the bridge or
    through `forward_loss(ids, labels)` when given (a sharded model's own forward).

    Over a `world` of N processes each rank takes its shard of every batch and the
    gradients are averaged before the step, so the step, the reported loss (the global
    batch's) and the token count are those of one process on the whole batch.

    Returns (losses, optimizer state bytes, tokens, seconds).
    """
    params = tuning.parameters()
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)
    losses: list[float] = []
    tokens = 0
    start = time.perf_counter()
    for step, batch in enumerate(steps, start=1):
        if world.any(should_stop()):
            raise Cancelled(tuple(losses))
        batch, labels = batch if isinstance(batch, tuple) else (batch, None)  # task data brings its completion labels
        ids = world.shard(batch)  # (B / N, S)
        with lean_backward():
            shard_labels = None if labels is None else world.shard(labels)
            loss = batch_loss(model, ids, shard_labels) if forward_loss is None else forward_loss(ids, shard_labels)
            if not torch.isfinite(loss):
                raise RuntimeError(f"training diverged at step {step} (loss {loss.item()}); lower the learning rate")
            loss.backward()
        world.average_gradients(params)
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(world.mean(loss.item()))
        tokens += batch.numel()
        report(step, losses[-1], tokens / (time.perf_counter() - start))
    state_bytes = optimizer_state_bytes(optimizer)
    del optimizer
    return losses, state_bytes, tokens, time.perf_counter() - start


@contextmanager
def base_frozen(model: LoadedModel) -> Iterator[None]:
    """Inside: no base parameter requires grad. After: their flags are back, their gradients gone."""
    params = list(model.hf_model.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
            p.grad = None


def run_method(
    model: LoadedModel,
    method: TuningMethod,
    mask: SelectionMask,
    data: TokenData,
    config: TrainConfig,
    folder: Path,
    eval_before: RunLoss,
    scan_prompt: Encoded,
    report: Callable[[int, float, float], None] = lambda step, loss, tps: None,
    should_stop: Callable[[], bool] = lambda: False,
    world: World = SINGLE,
) -> RunResult:
    """Train one method from the base model, measure it, save it into `folder`, and put the base back.

    Stopped on the way (`should_stop`), it saves what it trained so far and `stopped.json`
    into `folder`, then raises `Cancelled`. Over a `world` of processes only the main rank writes.
    """
    torch.manual_seed(config.seed)
    checkpointing = checkpoints_blocks(model, method, config)
    lr = method.learning_rate(config)
    with base_frozen(model):
        attached = method.attach(model, mask, config)
        tuning = attached.tuning
        losses: list[float] = []
        try:
            lean = functools.partial(method.lean_backward, tuning)
            with PeakMemory(model.device) as memory, block_checkpointing(model, checkpointing):
                losses, state_bytes, tokens, seconds = train(model, tuning, batches(data, config), config, lr, report, should_stop, lean, world)
            for p in tuning.parameters():
                p.requires_grad_(False)
            eval_after = held_out_loss(model, data.held_out, config.batch_size, stop_check(should_stop, world, losses), data.held_out_labels, world)
            outliers_after = outlier_snapshot(model, scan_prompt)
            trainable, changed = tuning.trainable, tuning.changed()
            deltas = None
            if world.is_main:
                folder.mkdir(parents=True, exist_ok=True)
                deltas = method.save(tuning, folder)
        except Cancelled as stop:
            if world.is_main:
                save_stopped(method, attached.name, tuning, stop.losses or tuple(losses), folder)
            raise
        finally:
            tuning.detach()
    result = RunResult(
        name=attached.name, method=method.name, lr=lr, trainable=trainable, changed=changed, train_loss=tuple(losses),
        eval_before=eval_before, eval_after=eval_after, peak_memory_mb=memory.peak_mb, optimizer_state_bytes=state_bytes,
        tokens_per_s=tokens / seconds, seconds=seconds, deltas=deltas, outliers_after=outliers_after,
        checkpointing=checkpointing, details=attached.details,
    )
    if world.is_main:
        write_json(folder / "run.json", result)
    return result


def stop_check(should_stop: Callable[[], bool], world: World = SINGLE, losses: list[float] | tuple[float, ...] = ()) -> Callable[[], None]:
    """A `between` for work outside the training loop: raises `Cancelled` once a stop is asked (on any rank)."""

    def check() -> None:
        if world.any(should_stop()):
            raise Cancelled(tuple(losses))

    return check


def save_stopped(method: TuningMethod, name: str, tuning: Tuning, losses: tuple[float, ...], folder: Path) -> None:
    """What a stopped run had trained: its deltas and `stopped.json` (steps done, loss curve)."""
    folder.mkdir(parents=True, exist_ok=True)
    deltas = method.save(tuning, folder)
    write_json(folder / "stopped.json", StoppedRun(name, method.name, len(losses), losses, deltas))
