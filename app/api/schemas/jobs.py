"""Fine-tune jobs and the runs they leave."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.api.schemas.common import FiniteFloat, Request
from app.api.schemas.task_data import data_choice
from outlier_core.intervene.corpus import BUNDLED, MAX_FILE_BYTES
from outlier_core.tune.jobs import JobStatus
from outlier_core.tune.methods import BASELINES
from outlier_core.tune.runs import RunSummary
from outlier_core.tune.sharding import Sharding
from outlier_core.tune.task_data import BUNDLED_TASKS
from outlier_core.tune.train_data import Checkpoint

Baseline = Literal[BASELINES]  # type: ignore[valid-type]
FinetuneData = data_choice(BUNDLED + BUNDLED_TASKS, "a bundled corpus or task, or an uploaded task's id (POST /api/task-data): task rows train on their completions")


class FinetuneIn(Request):
    mask_id: str = Field(min_length=1, max_length=64)
    baselines: list[Baseline] = Field(default=[], max_length=4, description="trained after the mask, from the same base, at the same budget where it applies")
    steps: int = Field(default=50, ge=1, le=100_000)
    lr: FiniteFloat = Field(default=1e-3, gt=0, description="sparse runs and LoRA")
    full_lr: FiniteFloat = Field(default=1e-4, gt=0)
    weight_decay: FiniteFloat = Field(default=0.01, ge=0)
    batch_size: int = Field(default=4, ge=1, le=1024)
    seq_len: int = Field(default=64, ge=2, le=65_536, description="tokens per block, BOS included")
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    lora_rank: int | None = Field(default=None, ge=1, le=65_536, description="default: the rank whose count is closest to the mask's")
    checkpoint: Checkpoint = Field(
        default="auto", description="recompute block activations in the backward pass; auto: for the mask, random and ln runs"
    )
    data: FinetuneData = "prose"  # type: ignore[valid-type]
    data_text: str | None = Field(default=None, min_length=1, max_length=MAX_FILE_BYTES, description="or your own text (passages split at blank lines)")
    processes: int | None = Field(
        default=None, ge=1, le=64,
        description="data-parallel run processes, each a shard of every batch (batch_size must split evenly); default: one per GPU on CUDA (as many as split the batch), one on CPU",
    )
    shard: Sharding | None = Field(
        default=None,
        description="fsdp: shard the model over the processes (FSDP2) for a model larger than one device; trains the mask alone (no baselines), on Linear weights",
    )


class JobsOut(BaseModel):
    jobs: list[JobStatus] = Field(description="newest first")


class RunsOut(BaseModel):
    runs: list[RunSummary] = Field(description="newest first")
