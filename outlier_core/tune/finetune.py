"""Short causal-LM fine-tunes of a mask and its baselines, measured the same way.

One comparison: the data is packed into fixed blocks (BOS + seq_len-1 tokens) and split
into train and held-out blocks once; the base model is evaluated and scanned once; then
each method (the mask, then the chosen baselines) trains from the same base with the same
seed and the same batches, is evaluated and scanned, and the model is put back exactly as
it was. Everything lands under the comparison's folder:

    FOLDER/comparison.json                 config, data, base evaluation and scan, every run
    FOLDER/<method>/run.json               one run: curve, evaluation, memory, speed, scan after
    FOLDER/<method>/mask.json|.safetensors the coordinates it trained (sparse methods)
    FOLDER/<method>/deltas.safetensors     its trained state (sparse: index + values; LoRA: A, B;
                                           full: the tuned weights, as large as the model)
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import resource
import time
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.modeling_layers import GradientCheckpointingLayer

from outlier_core.errors import InputError
from outlier_core.load.models import LoadedModel
from outlier_core.load.tokens import Encoded
from outlier_core.observe.capture import scan_encoded
from outlier_core.observe.detect import RELATIVE_RULE
from outlier_core.observe.weights import WeightRule, weight_outlier_mask
from outlier_core.select import mask_rules
from outlier_core.select.masks import SelectionMask
from outlier_core.tune.baselines import FullTuning, LoraTuning, lora_plan, lora_targets
from outlier_core.tune.sparse import SparseTuner, effective_weights
from outlier_core.tune.train_data import TokenData, TrainConfig, batches

log = logging.getLogger(__name__)

METHODS = ("mask", "random", "ln", "lora", "full")
COORDINATE_METHODS = ("mask", "random", "ln")  # train selected coordinates through a SparseTuner
LISTED_OUTLIERS = 32  # massive entries and norm outliers listed per scan


class Cancelled(Exception):
    """Raised inside a run when its caller asked it to stop."""


# ---- loss, evaluation, outliers ----


def lm_loss(model: LoadedModel, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy through the bridge's forward (hooks fire). ids: (B, S)."""
    ids = ids.to(model.device)
    logits = model.bridge(ids, return_type="logits")  # (B, S, V)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16/fp16 logits lose the loss's precision
    # shift the targets, not the logits: slicing (B, S, V) would copy the largest tensor of the step
    targets = F.pad(ids[:, 1:], (0, 1), value=-100)  # (B, S); -100: no target after the last token
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)


@dataclass(frozen=True)
class Evaluation:
    loss: float
    perplexity: float
    tokens: int

    def to_json(self) -> dict:
        return {"loss": self.loss, "perplexity": self.perplexity, "tokens": self.tokens}


def evaluate(model: LoadedModel, blocks: torch.Tensor, batch_size: int) -> Evaluation:
    """Token-weighted mean loss over `blocks` (N, S)."""
    total, tokens = 0.0, 0
    with torch.inference_mode():
        for start in range(0, blocks.shape[0], batch_size):
            chunk = blocks[start : start + batch_size]
            n = chunk.shape[0] * (chunk.shape[1] - 1)
            total += float(lm_loss(model, chunk)) * n
            tokens += n
    loss = total / tokens
    return Evaluation(loss, math.exp(min(loss, 700.0)), tokens)


def block_encoded(model: LoadedModel, block: torch.Tensor) -> Encoded:
    """One packed block (S,) as an `Encoded` prompt for a scan."""
    ids = block.tolist()
    return Encoded(torch.tensor([ids], device=model.device), tuple(model.tokenizer.decode([i]) for i in ids), True)


def outlier_snapshot(model: LoadedModel, encoded: Encoded) -> dict:
    """Where the outliers are now: per-layer max |resid_post|, the largest massive entries,
    the attention sink, and the largest norm-weight outliers (effective weights)."""
    found = scan_encoded(model, encoded, "resid_post", top_k=1, rule=RELATIVE_RULE)
    massive = sorted(found.massive, key=lambda m: -abs(m.value))[:LISTED_OUTLIERS]
    norms = [n for n, _ in mask_rules.norm_parameters(model)]
    norm_outliers = []
    for name, w in effective_weights(model, norms).items():
        w = w.float().cpu() + model.norm_offset  # (D,)
        z = (w - w.mean()) / w.std(unbiased=False).clamp_min(1e-12)
        for d in torch.nonzero(weight_outlier_mask(w, WeightRule())).flatten().tolist():
            norm_outliers.append({"parameter": name, "index": d, "value": float(w[d]), "z": float(z[d])})
    norm_outliers.sort(key=lambda o: -abs(o["z"]))
    return {
        "max_abs": [s.max_abs for s in found.layers],
        "massive": [{"layer": m.layer, "position": m.position, "dim": m.dim, "value": m.value} for m in massive],
        "sink_share": list(found.sink_share),
        "norm_outliers": norm_outliers[:LISTED_OUTLIERS],
    }


# ---- memory ----


class PeakMemory:
    """Peak memory above the level at entry: CUDA allocator peak, or the process's peak RSS on
    the CPU (Linux: VmHWM after resetting it; the whole process, other threads included)."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.peak_mb = 0.0

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            self.resettable = _reset_peak_rss()
            self.start = _rss_bytes("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        elif self.resettable:
            peak = _rss_bytes("VmHWM")
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # lifetime peak: an upper bound
        self.peak_mb = max(0.0, (peak - self.start) / 2**20)


def _reset_peak_rss() -> bool:
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _rss_bytes(key: str) -> int:
    try:
        with open(f"/proc/{os.getpid()}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---- activation checkpointing ----


def checkpoints_blocks(model: LoadedModel, method: str, config: TrainConfig) -> bool:
    """Whether `method`'s run recomputes block activations in its backward pass.

    "auto" turns it on for the coordinate tunings: their trainable state is a few thousand
    values, so activations are nearly all of their training memory, and a mask holding a
    layer-0 coordinate (super weights and early norm outliers live there) makes the
    backward pass keep every block's activations. LoRA and full fine-tuning run as peft and
    Hugging Face run them by default; "on" checkpoints every method, for an equal footing.
    """
    wanted = config.checkpoint == "on" or (config.checkpoint == "auto" and method in COORDINATE_METHODS)
    if wanted and not _checkpointable_blocks(model):
        if config.checkpoint == "on":
            raise InputError("checkpoint", f"{model.name} has no blocks that support activation checkpointing; use off")
        log.info("%s has no checkpointable blocks; %s keeps its activations", model.name, method)
        return False
    return wanted


def _checkpointable_blocks(model: LoadedModel) -> list[nn.Module]:
    if not getattr(model.hf_model, "supports_gradient_checkpointing", False):
        return []
    return [m for m in model.hf_model.modules() if isinstance(m, GradientCheckpointingLayer)]


@contextmanager
def block_checkpointing(model: LoadedModel, on: bool) -> Iterator[None]:
    """Inside: each decoder block keeps only its inputs for the backward pass and recomputes
    the rest there (torch's non-reentrant checkpoint). Gradients are unchanged.

    Set block by block through the switches Hugging Face's `GradientCheckpointingLayer`
    reads (its checkpoint function, its flag, and its own `training` flag, not its
    children's: dropout stays as it was). The model-wide `activation_checkpointing_enable`
    would also make the input embeddings require grad, which drags every method's backward
    pass down to layer 0, and leaves that hook behind.
    """
    if not on:
        yield
        return
    blocks = _checkpointable_blocks(model)
    saved = [(b.training, b.gradient_checkpointing, b.__dict__.get("_gradient_checkpointing_func")) for b in blocks]
    for block in blocks:
        block._gradient_checkpointing_func = functools.partial(checkpoint, use_reentrant=False)
        block.gradient_checkpointing = True
        block.training = True
    try:
        yield
    finally:
        for block, (training, flag, func) in zip(blocks, saved):
            block.training, block.gradient_checkpointing = training, flag
            if func is None:
                del block._gradient_checkpointing_func
            else:
                block._gradient_checkpointing_func = func


# ---- one method ----


class Tuning(Protocol):
    def parameters(self) -> list[nn.Parameter]: ...
    @property
    def trainable(self) -> int: ...
    def changed(self) -> int: ...
    def save(self, path: str | Path) -> Path | None: ...
    def close(self) -> None: ...


class _SparseTuning:
    """A SparseTuner in the shape the loop expects (`close` = detach: the base comes back)."""

    def __init__(self, model: LoadedModel, mask: SelectionMask):
        self.mask = mask
        self.tuner = SparseTuner(model, mask)

    def parameters(self) -> list[nn.Parameter]:
        return self.tuner.parameters()

    @property
    def trainable(self) -> int:
        return self.tuner.trainable

    def changed(self) -> int:
        return self.tuner.changed()

    def save(self, path: str | Path) -> Path:
        return self.tuner.save(path)

    def lean_backward(self):
        return self.tuner.lean_backward()

    def close(self) -> None:
        self.tuner.detach()


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
class RunResult:
    name: str
    method: str
    lr: float
    trainable: int
    changed: int
    train_loss: tuple[float, ...]
    eval_before: Evaluation
    eval_after: Evaluation
    peak_memory_mb: float
    optimizer_state_bytes: int
    tokens_per_s: float
    seconds: float  # training wall time (evaluation and scans excluded)
    deltas: str | None  # file name inside the run folder, None when not written
    outliers_after: dict
    checkpointing: bool  # block activations recomputed in the backward pass
    details: dict = field(default_factory=dict)  # method specifics: LoRA rank and targets, mask count

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "method": self.method,
            "lr": self.lr,
            "trainable": self.trainable,
            "changed": self.changed,
            "train_loss": list(self.train_loss),
            "eval_before": self.eval_before.to_json(),
            "eval_after": self.eval_after.to_json(),
            "peak_memory_mb": self.peak_memory_mb,
            "optimizer_state_bytes": self.optimizer_state_bytes,
            "tokens_per_s": self.tokens_per_s,
            "seconds": self.seconds,
            "deltas": self.deltas,
            "outliers_after": self.outliers_after,
            "checkpointing": self.checkpointing,
            **self.details,
        }


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(t.numel() * t.element_size() for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t))


def build_tuning(model: LoadedModel, method: str, mask: SelectionMask, config: TrainConfig) -> tuple[str, Tuning, dict]:
    """(run name, tuning attached to the model, details) for one method."""
    if method == "mask":
        return mask.name, _SparseTuning(model, mask), {"mask_count": mask.count}
    if method == "random":
        random_mask = mask_rules.random_like(mask, config.seed)
        return "random", _SparseTuning(model, random_mask), {"mask_count": random_mask.count}
    if method == "ln":
        return "ln_only", _SparseTuning(model, mask_rules.norm_mask(model)), {}
    if method == "lora":
        targets, rank = (lora_targets(model, mask), config.lora_rank) if config.lora_rank else lora_plan(model, mask)
        torch.manual_seed(config.seed)  # peft draws A at random
        return f"lora_r{rank}", LoraTuning(model, targets, rank), {"lora_rank": rank, "lora_targets": targets}
    if method == "full":
        return "full", FullTuning(model), {}
    raise InputError("baseline", f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def train(
    model: LoadedModel,
    tuning: Tuning,
    steps: Iterator[torch.Tensor],
    config: TrainConfig,
    lr: float,
    report: Callable[[int, float, float], None],
    should_stop: Callable[[], bool],
) -> tuple[list[float], int, int, float]:
    """AdamW over the tuning's parameters only (the caller freezes the rest).

    Returns (losses, optimizer state bytes, tokens, seconds).
    """
    params = tuning.parameters()
    for p in params:
        p.requires_grad_(True)
    lean = getattr(tuning, "lean_backward", nullcontext)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)
    losses: list[float] = []
    tokens = 0
    start = time.perf_counter()
    for step, ids in enumerate(steps, start=1):
        if should_stop():
            raise Cancelled()
        with lean():
            loss = lm_loss(model, ids)
            if not torch.isfinite(loss):
                raise RuntimeError(f"training diverged at step {step} (loss {loss.item()}); lower the learning rate")
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        tokens += ids.numel()
        report(step, losses[-1], tokens / (time.perf_counter() - start))
    state_bytes = optimizer_state_bytes(optimizer)
    del optimizer
    return losses, state_bytes, tokens, time.perf_counter() - start


def run_method(
    model: LoadedModel,
    method: str,
    mask: SelectionMask,
    data: TokenData,
    config: TrainConfig,
    folder: Path,
    eval_before: Evaluation,
    scan_prompt: Encoded,
    report: Callable[[int, float, float], None] = lambda step, loss, tps: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> RunResult:
    """Train one method from the base model, measure it, save it, and put the base back."""
    torch.manual_seed(config.seed)
    params = list(model.hf_model.parameters())
    flags = [p.requires_grad for p in params]
    lr = config.full_lr if method == "full" else config.lr
    name, tuning, details = build_tuning(model, method, mask, config)
    try:
        for p in model.hf_model.parameters():
            p.requires_grad_(False)
        checkpointing = checkpoints_blocks(model, method, config)
        with PeakMemory(model.device) as memory, block_checkpointing(model, checkpointing):
            losses, state_bytes, tokens, seconds = train(model, tuning, batches(data, config), config, lr, report, should_stop)
        for p in tuning.parameters():
            p.requires_grad_(False)
        eval_after = evaluate(model, data.held_out, config.batch_size)
        outliers_after = outlier_snapshot(model, scan_prompt)
        changed = tuning.changed()
        folder.mkdir(parents=True, exist_ok=True)
        if isinstance(tuning, _SparseTuning):
            tuning.mask.save(folder / "mask.json")
        deltas = tuning.save(folder / "deltas.safetensors")
        result = RunResult(
            name=name,
            method=method,
            lr=lr,
            trainable=tuning.trainable,
            changed=changed,
            train_loss=tuple(losses),
            eval_before=eval_before,
            eval_after=eval_after,
            peak_memory_mb=memory.peak_mb,
            optimizer_state_bytes=state_bytes,
            tokens_per_s=tokens / seconds,
            seconds=seconds,
            deltas=deltas.name if deltas else None,
            outliers_after=outliers_after,
            checkpointing=checkpointing,
            details=details,
        )
        (folder / "run.json").write_text(json.dumps(result.to_json(), indent=1) + "\n", encoding="utf-8")
        return result
    finally:
        tuning.close()
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
            p.grad = None


# ---- a comparison ----


@dataclass(frozen=True)
class Comparison:
    folder: str
    mask: dict  # the mask's summary (no indices)
    config: TrainConfig
    data: dict
    eval_before: Evaluation
    outliers_before: dict
    runs: tuple[RunResult, ...]

    def to_json(self) -> dict:
        return {
            "folder": self.folder,
            "mask": self.mask,
            "config": self.config.to_json(),
            "data": self.data,
            "eval_before": self.eval_before.to_json(),
            "outliers_before": self.outliers_before,
            "runs": [r.to_json() for r in self.runs],
        }


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
    mask.validate(model)
    if mask.count == 0:
        raise InputError("mask", "selects no coordinates")
    unknown = [b for b in baselines if b not in METHODS[1:]]
    if unknown:
        raise InputError("baseline", f"unknown baseline {unknown[0]!r}; choose from {', '.join(METHODS[1:])}")
    methods = ("mask", *dict.fromkeys(baselines))
    for method in methods:
        checkpoints_blocks(model, method, config)  # a model that cannot checkpoint fails here, before any training
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    eval_before = evaluate(model, data.held_out, config.batch_size)
    scan_prompt = block_encoded(model, data.held_out[0])
    outliers_before = outlier_snapshot(model, scan_prompt)
    runs: list[RunResult] = []

    def write(done: tuple[RunResult, ...]) -> Comparison:
        comparison = Comparison(str(folder), mask.summary_json(), config, data.to_json(), eval_before, outliers_before, done)
        (folder / "comparison.json").write_text(json.dumps(comparison.to_json(), indent=1) + "\n", encoding="utf-8")
        return comparison

    for index, method in enumerate(methods):
        log.info("fine-tuning %s (%d/%d)", method, index + 1, len(methods))

        def report(step: int, loss: float, tokens_per_s: float, method: str = method, index: int = index) -> None:
            progress(StepReport(method, index, len(methods), step, config.steps, loss, tokens_per_s))

        runs.append(run_method(model, method, mask, data, config, folder / method, eval_before, scan_prompt, report, should_stop))
        write(tuple(runs))
    return write(tuple(runs))


def comparison_job(
    model: LoadedModel,
    mask: SelectionMask,
    baselines: tuple[str, ...],
    data: TokenData,
    config: TrainConfig,
    lock: AbstractContextManager | None = None,
) -> Callable:
    """A `work(ctx)` for `jobs.JobRunner.submit`: the comparison, written into the job's folder.

    `lock` (e.g. the API's model lock) is held for the whole job: the model carries the
    trained deltas while a method runs. A server that must keep answering meanwhile can
    give the job a model of its own (`load_model` again) instead.
    """
    methods = 1 + len(dict.fromkeys(baselines))

    def work(ctx) -> dict:
        def progress(r: StepReport) -> None:
            phase = f"{r.method} ({r.method_index + 1}/{r.n_methods})"
            ctx.report(r.method_index * r.steps + r.step, r.n_methods * r.steps, r.loss, r.tokens_per_s, phase)

        with lock or nullcontext():
            ctx.report(0, methods * config.steps, phase="evaluating the base model")
            return compare(model, mask, baselines, data, config, ctx.folder, progress, ctx.cancelled).to_json()

    return work


def list_runs(root: str | Path) -> list[dict]:
    """Comparisons under a runs directory, newest first: folder, mask, and per run the headline numbers."""
    found = []
    for path in Path(root).glob("*/comparison.json"):
        try:
            comparison = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            log.warning("skipping unreadable %s", path)
            continue
        found.append({
            "id": path.parent.name,
            "folder": str(path.parent),
            "modified": path.stat().st_mtime,
            "mask": comparison.get("mask", {}).get("name"),
            "runs": [
                {k: r.get(k) for k in ("name", "method", "trainable", "changed", "eval_before", "eval_after", "seconds", "deltas")}
                for r in comparison.get("runs", [])
            ],
        })
    return sorted(found, key=lambda r: -r["modified"])
