"""What a fine-tune will hold in memory, estimated from shapes before it starts.

Rough on purpose: the estimate sizes the largest tensors a run holds at once, so that a
request for a thousand sequences of eight thousand tokens is refused in milliseconds, not
found out gigabytes into the run. The runs of a comparison train one after another, so
the peak is the largest run's:

- its copy of the model, in the model's dtype, once per process;
- per trained parameter an fp32 value, gradient and two Adam moments;
- what the backward pass keeps of a batch: per token and layer the block's input with
  checkpointing (plus one block recomputed), else the block's inner activations and its
  attention pattern (heads × T per token); and the logits with their log-softmax and
  gradient, in fp32.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch

from outlier_core.errors import InputError
from outlier_core.load.models import LoadedModel
from outlier_core.load.token_limits import longer_than
from outlier_core.select.mask_rules import norm_mask
from outlier_core.select.masks import SelectionMask, model_shapes
from outlier_core.tune.methods import COORDINATE_METHODS
from outlier_core.tune.methods.lora import lora_plan, lora_targets
from outlier_core.tune.train_data import TokenData, TrainConfig

FP32 = 4
OPTIMIZER_BYTES = 4 * FP32  # value, gradient and two Adam moments per trained parameter
LOGIT_COPIES = 3  # logits, log-softmax, their gradient


@dataclass(frozen=True)
class RunMemory:
    """Bytes one run of a comparison holds at its peak, by what holds them."""

    method: str
    weights: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.optimizer + self.activations


def trained_parameters(model: LoadedModel, mask: SelectionMask, method: str, config: TrainConfig) -> int:
    """How many parameters `method` trains beside `mask` (as the methods choose them).

    The coordinate methods train one value per chosen entry: the mask's own count (mask,
    random), every norm entry (ln), or the mask's count of norm entries, all of them when
    the model has fewer (ln_top). LoRA and SHiRA train r·(out + in) per targeted Linear at
    the same rank."""
    if method in ("mask", "random"):
        return mask.count
    if method == "ln":
        return norm_mask(model).count
    if method == "ln_top":
        return min(mask.count, norm_mask(model).count)
    if method == "full":
        return model_shapes(model)[1]
    if config.lora_rank is None:
        targets, rank = lora_plan(model, mask)
    else:
        targets, rank = lora_targets(model, mask), config.lora_rank
    shapes, _ = model_shapes(model)
    return rank * sum(sum(shapes[f"{t}.weight"]) for t in targets)  # A (r × in) and B (out × r) per target


def run_memory(model: LoadedModel, method: str, trained: int, batch: int, seq_len: int, checkpoint: bool, processes: int = 1) -> RunMemory:
    """The peak of one run training `trained` parameters on batches of (batch, seq_len) tokens."""
    n_params = model_shapes(model)[1]
    act = model.dtype.itemsize
    tokens = batch * seq_len
    inner = 8 * model.d_model + 4 * model.d_mlp + 2 * model.n_heads * seq_len  # one block's activations per token
    kept = model.n_layers * model.d_model + inner if checkpoint else model.n_layers * inner
    activations = tokens * kept * act + tokens * model.d_vocab * FP32 * LOGIT_COPIES
    return RunMemory(method, processes * n_params * act, processes * trained * OPTIMIZER_BYTES, activations)


def finetune_memory(
    model: LoadedModel, mask: SelectionMask, methods: Sequence[str], config: TrainConfig, data: TokenData, processes: int = 1
) -> list[RunMemory]:
    """Each run's estimate, for the batches `data` gives (a batch is at most the training blocks)."""
    batch = min(config.batch_size, int(data.train.shape[0]))
    seq_len = int(data.train.shape[1])
    estimates = []
    for method in dict.fromkeys(methods):
        checkpoint = config.checkpoint == "on" or (config.checkpoint == "auto" and method in COORDINATE_METHODS)
        trained = trained_parameters(model, mask, method, config)
        estimates.append(run_memory(model, method, trained, batch, seq_len, checkpoint, processes))
    return estimates


def available_memory(device: str) -> int:
    """Bytes free for a run now: the GPU's free memory on CUDA, else the system's MemAvailable."""
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits(estimates: Sequence[RunMemory], available: int, share: float) -> None:
    """Refuse the fine-tune when its largest run needs more than `share` of `available` bytes,
    naming the setting that drives it: the batch's activations, LoRA's rank, or a run itself."""
    largest = max(estimates, key=lambda run: run.total)
    allowed = int(available * share)
    if largest.total <= allowed:
        return
    if largest.activations >= max(largest.optimizer, largest.weights):
        field, advice = "batch_size", "lower batch_size or seq_len"
    elif largest.method == "lora":
        field, advice = "lora_rank", "lower lora_rank"
    else:
        field, advice = "baselines", f"leave out the {largest.method} baseline or use a smaller mask"
    raise InputError(
        field,
        f"the {largest.method} run would need about {_gib(largest.total)} of memory "
        f"({_gib(largest.activations)} activations, {_gib(largest.optimizer)} trained state, {_gib(largest.weights)} weights); "
        f"this server allows {_gib(allowed)} ({share:.0%} of what is free): {advice}",
    )


def check_text(model: LoadedModel, text: str, max_tokens: int, field: str) -> None:
    """Refuse training text past `max_tokens` tokens, from a prefix of it (before it is packed)."""
    if longer_than(model, text, max_tokens):
        raise InputError(field, f"is more than {max_tokens:,} tokens long; this server trains on at most {max_tokens:,}")


def check_finetune(
    model: LoadedModel, mask: SelectionMask, methods: Sequence[str], config: TrainConfig, data: TokenData, processes: int,
    share: float, memory_cap: int | None = None,
) -> None:
    """A fine-tune's largest run within `share` of the free memory (or of `memory_cap` bytes,
    a run process's own limit, when smaller)."""
    available = available_memory(model.device)
    check_fits(finetune_memory(model, mask, methods, config, data, processes), min(available, memory_cap or available), share)


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"
