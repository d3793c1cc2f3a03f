"""Data parallel over processes: each rank trains on its shard of the global batch and the
trainable values' gradients are averaged, so N ranks take the step one process would.

Only the tuning's own parameters (sparse values, LoRA factors, or every weight for a full
fine-tune) are all-reduced, explicitly, after the backward pass; the frozen base is never
wrapped or touched, so the parametrization that adds the sparse values keeps working as it
does in one process. A launcher (`torchrun`, `accelerate launch`) sets RANK, WORLD_SIZE and
LOCAL_RANK; without them the world is one process and every method here is a no-op.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from outlier_core.errors import InputError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """The rank that writes files and reports progress."""
        return self.rank == 0

    def device(self, device: str | None) -> str | None:
        """Each rank's own GPU under a launcher (`cuda`, `cuda:0` -> `cuda:<local rank>`); other devices as given."""
        if self.size > 1 and (device is None or device.startswith("cuda")) and torch.cuda.is_available():
            return f"cuda:{self.local_rank}"
        return device

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a global batch (B, S) -> (B / size, S)."""
        if self.size == 1:
            return batch
        per_rank = batch.shape[0] // self.size
        return batch[self.rank * per_rank : (self.rank + 1) * per_rank]

    def part(self, chunk: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a chunk that need not split evenly (N, ...) -> (<= ceil(N / size), ...);
        empty for the last ranks of a short chunk."""
        if self.size == 1:
            return chunk
        per_rank = -(-chunk.shape[0] // self.size)
        return chunk[self.rank * per_rank : (self.rank + 1) * per_rank]

    def check_batch(self, batch_size: int, train_blocks: int) -> None:
        """Every rank needs an equal share of each global batch, or the average is not the one-process step."""
        size = min(batch_size, train_blocks)
        if self.size > 1 and size % self.size:
            raise InputError("batch_size", f"a batch of {size} blocks does not split evenly over {self.size} processes")

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Every rank's gradients become the mean over ranks: one flat all-reduce per dtype and device."""
        if self.size == 1:
            return
        groups: dict[tuple, list[torch.nn.Parameter]] = {}
        for p in params:
            if p.grad is not None:
                groups.setdefault((p.grad.dtype, p.grad.device), []).append(p)
        for group in groups.values():
            flat = torch.cat([p.grad.reshape(-1) for p in group])  # (sum of numels,)
            dist.all_reduce(flat)
            flat /= self.size
            offset = 0
            for p in group:
                n = p.grad.numel()
                p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
                offset += n

    def mean(self, value: float) -> float:
        if self.size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t) / self.size

    def sums(self, *values: float) -> tuple[float, ...]:
        """Each value summed over ranks, in float64 (a loss sum and a token count stay exact enough)."""
        if self.size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return tuple(t.tolist())

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one (a stop asked of one rank stops them all at the same step)."""
        if self.size == 1:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())


SINGLE = World()


def default_processes(device: str, batch_size: int) -> int:
    """One process per GPU for a CUDA run, as many as split the batch evenly; one elsewhere."""
    if not device.startswith("cuda"):
        return 1
    n = max(1, torch.cuda.device_count())
    while batch_size % n:
        n -= 1
    return n


def world_from_env(device: str | None) -> World:
    """The world a launcher set up (RANK, WORLD_SIZE, LOCAL_RANK), its process group joined;
    one process when none was set. Control values (stop flags, losses) travel over gloo, so
    the group is gloo on the CPU and NCCL beside it for CUDA gradients."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return SINGLE
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        cuda = (world.device(device) or "").startswith("cuda")
        if cuda:
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group("cuda:nccl,cpu:gloo" if cuda else "gloo", timeout=datetime.timedelta(minutes=30))
    return world


def leave(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()
