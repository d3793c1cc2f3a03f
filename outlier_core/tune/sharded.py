"""Sharded training (FSDP2, `fully_shard`) of a mask's coordinates, for a model larger than one device.

`sparse.SparseDeltas` adds its values to a weight through `torch.nn.utils.parametrize`,
which does not survive `fully_shard`: FSDP swaps every parameter for a sharded DTensor and
gathers it only around its block's forward. Here the base weights are FSDP's alone and
never written; the trainable values live beside the model, replicated on every rank, and
a forward hook on each Linear that holds selected coordinates adds their share to its output:

    y[..., r] += x[..., c] * v   for each selected (r, c) = divmod(flat index, in_features)

which is `x @ (W + scatter(v)).T + b` without the weight (sharded or not) or a dense delta.
The values' gradients are averaged over the ranks explicitly, as in the data-parallel runs
(`World.average_gradients`), and each rank trains on its shard of every global batch.

What it trains: the mask method alone (no baselines, no lm-eval), on Linear weights only (a
transformer's projections and lm_head; an embedding or a norm is refused, field `shard`).
Each rank loads the whole model into host memory before sharding it (FSDP then moves each
rank's shards to its device): a model must fit the host's memory, not one device's. With
one process there is nothing to shard: the same hooks train on the whole model.

    FOLDER/comparison.json      as a comparison's, its run marked "shard": "fsdp" (no outlier scans)
    FOLDER/mask/deltas.safetensors, mask.safetensors, run.json
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from outlier_core.contract import write_json
from outlier_core.errors import InputError
from outlier_core.load.models import LoadedModel
from outlier_core.select.masks import MaskSummary, SelectionMask
from outlier_core.tune.distributed import World
from outlier_core.tune.evaluation import RunLoss, held_out_loss
from outlier_core.tune.memory import PeakMemory
from outlier_core.tune.methods.base import DELTAS_FILE
from outlier_core.tune.methods.mask import METHOD as MASK_METHOD
from outlier_core.tune.sparse import DELTAS_FORMAT, module_slots
from outlier_core.tune.task_data import IGNORE_INDEX, completion_loss
from outlier_core.tune.train_data import DataSummary, TokenData, TrainConfig, batches
from outlier_core.tune.training import Cancelled, base_frozen, save_stopped, stop_check, train

log = logging.getLogger(__name__)


def linear_slots(root: nn.Module, mask: SelectionMask) -> dict[str, list]:
    """Each masked parameter's owners (`sparse.module_slots`), refused naming `shard` unless
    every owner holds it as a Linear's weight: the only place the output hook can add it."""
    slots = module_slots(root)
    for name in mask.coordinates:
        held = slots.get(name, [])
        if not held or any(not isinstance(slot.module, nn.Linear) or slot.attr != "weight" for slot in held):
            raise InputError("shard", f"{name} is not a Linear weight; a sharded run trains Linear weights only")
    return slots


class LinearDeltas:
    """Trainable values at fixed flat positions of Linear weights, added by output hooks.

    The mask's coordinates (plain HF parameter name -> (K,) int64 flat positions) train; the
    module computes base + delta until `remove()`; its parameters are never touched."""

    def __init__(self, root: nn.Module, mask: SelectionMask, device: torch.device | str):
        self.mask = mask  # what `MaskMethod.save` writes beside the deltas
        slots = linear_slots(root, mask)
        self.index: dict[str, torch.Tensor] = {}
        self.values: dict[str, nn.Parameter] = {}
        self._hooks = []
        for name, flat in mask.coordinates.items():
            held = slots[name]
            linear = held[0].module
            if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= linear.out_features * linear.in_features):
                raise InputError("mask", f"the coordinates of {name} fall outside its shape {[linear.out_features, linear.in_features]}")
            index = flat.to(device=device, dtype=torch.int64)  # (K,)
            rows, cols = index // linear.in_features, index % linear.in_features  # (K,) each
            values = nn.Parameter(torch.zeros(index.numel(), dtype=torch.float32, device=device))  # (K,), replicated
            self.index[name], self.values[name] = index, values
            for slot in held:  # a tied weight has two owners: both add its delta
                self._hooks.append(slot.module.register_forward_hook(_adder(rows, cols, values)))

    def parameters(self) -> list[nn.Parameter]:
        return list(self.values.values())

    @property
    def trainable(self) -> int:
        return sum(v.numel() for v in self.values.values())

    def changed(self) -> int:
        return sum(int((v != 0).sum()) for v in self.values.values())

    def tensors(self) -> dict[str, torch.Tensor]:
        """As `sparse.SparseDeltas.tensors`: `NAME.index` (K,) int64 and `NAME.values` (K,) float32, on the CPU."""
        found = {}
        for name, values in self.values.items():
            found[f"{name}.index"] = self.index[name].cpu().contiguous()
            found[f"{name}.values"] = values.detach().cpu().contiguous()
        return found

    def save(self, path: str | Path) -> Path:
        """The file `sparse.save_deltas` writes, so that applying, comparing and exporting read it alike."""
        from safetensors.torch import save_file

        shapes = {name: list(self.mask.shapes[name]) for name in self.values}
        save_file(self.tensors(), str(path), metadata={"format": DELTAS_FORMAT, "shapes": json.dumps(shapes), "mask": self.mask.name})
        return Path(path)

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []


def _adder(rows: torch.Tensor, cols: torch.Tensor, values: nn.Parameter) -> Callable:
    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        x = args[0]  # (..., in)
        share = x.index_select(-1, cols) * values.to(x.dtype)  # (..., K)
        return output.index_add(-1, rows, share.to(output.dtype))  # (..., out)

    return hook


def shard(hf_model: nn.Module, world: World, device: str) -> None:
    """`fully_shard` each transformer block, then the rest (embeddings, final norm, lm_head) at the root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cuda" if device.startswith("cuda") else "cpu", (world.size,))
    blocks = max((m for m in hf_model.modules() if isinstance(m, nn.ModuleList)), key=len, default=nn.ModuleList())
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(hf_model, mesh=mesh)
    params = list(hf_model.parameters())
    held = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in params)
    log.info("sharded %d blocks over %d processes: this rank holds %d of %d weights", len(blocks), world.size, held, sum(p.numel() for p in params))


def hf_forward_loss(hf_model: nn.Module, device: str) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """The mean next-token loss (on the labelled tokens when labels are given) through the
    Hugging Face model's own forward: what FSDP's hooks wrap, where the bridge's would not."""

    def loss(ids: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        ids = ids.to(device)
        logits = hf_model(input_ids=ids).logits  # (B, S, V)
        if labels is not None:
            return completion_loss(logits, labels.to(device))
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        targets = F.pad(ids[:, 1:], (0, 1), value=IGNORE_INDEX)  # (B, S)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)

    return loss


@dataclass(frozen=True)
class ShardedRunResult:
    """The mask's run, as FOLDER/mask/run.json holds it: a comparison run's fields, less the
    outlier scan after (a scan reads activations through the bridge, which FSDP does not wrap)."""

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
    seconds: float
    deltas: str | None
    checkpointing: bool
    mask_count: int
    shard: str
    processes: int


@dataclass(frozen=True)
class ShardedComparison:
    folder: str
    mask: MaskSummary
    config: TrainConfig
    data: DataSummary
    eval_before: RunLoss
    runs: tuple[ShardedRunResult, ...]


def run_sharded(
    model: LoadedModel,
    mask: SelectionMask,
    data: TokenData,
    config: TrainConfig,
    folder: Path,
    world: World,
    progress: Callable[[int, float, float], None] = lambda step, loss, tps: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> ShardedComparison:
    """Shard the model over `world`, train the mask's values, evaluate before and after; the main rank writes."""
    mask.validate(model)
    if mask.count == 0:
        raise InputError("mask", "selects no coordinates")
    device = str(model.device)
    with base_frozen(model):
        deltas = LinearDeltas(model.hf_model, mask, device)
        try:
            return _train(model, deltas, data, config, folder, world, progress, should_stop)
        finally:
            deltas.remove()


def _train(
    model: LoadedModel, deltas: LinearDeltas, data: TokenData, config: TrainConfig, folder: Path, world: World,
    progress: Callable[[int, float, float], None], should_stop: Callable[[], bool],
) -> ShardedComparison:
    mask, device = deltas.mask, str(model.device)
    if world.size > 1:
        shard(model.hf_model, world, device)
    forward_loss = hf_forward_loss(model.hf_model, device)
    eval_before = held_out_loss(model, data.held_out, config.batch_size, stop_check(should_stop, world), data.held_out_labels, world, forward_loss)
    lr = MASK_METHOD.learning_rate(config)
    torch.manual_seed(config.seed)
    losses: list[float] = []
    method_folder = folder / MASK_METHOD.name
    try:
        with PeakMemory(device) as memory:
            losses, state_bytes, tokens, seconds = train(model, deltas, batches(data, config), config, lr, progress, should_stop, world=world, forward_loss=forward_loss)
        for p in deltas.parameters():
            p.requires_grad_(False)
        eval_after = held_out_loss(model, data.held_out, config.batch_size, stop_check(should_stop, world, losses), data.held_out_labels, world, forward_loss)
    except Cancelled as stopped:
        if world.is_main:
            save_stopped(MASK_METHOD, mask.name, deltas, stopped.losses or tuple(losses), method_folder)
        raise
    result = ShardedRunResult(
        name=mask.name, method=MASK_METHOD.name, lr=lr, trainable=deltas.trainable, changed=deltas.changed(), train_loss=tuple(losses),
        eval_before=eval_before, eval_after=eval_after, peak_memory_mb=memory.peak_mb, optimizer_state_bytes=state_bytes,
        tokens_per_s=tokens / seconds, seconds=seconds, deltas=DELTAS_FILE if world.is_main else None, checkpointing=False,
        mask_count=mask.count, shard="fsdp", processes=world.size,
    )
    comparison = ShardedComparison(str(folder), mask.summary(), config, data.summary, eval_before, (result,))
    if world.is_main:
        method_folder.mkdir(parents=True, exist_ok=True)
        MASK_METHOD.save(deltas, method_folder)  # mask.safetensors and deltas.safetensors
        write_json(method_folder / "run.json", result)
        write_json(folder / "comparison.json", comparison)
    log.info("sharded mask run over %d processes: %d steps, held-out loss %.4f -> %.4f", world.size, len(losses), eval_before.loss, eval_after.loss)
    return comparison
