"""A fine-tune request's size, checked against the server's settings before it is queued."""

from __future__ import annotations

from app.api.schemas.jobs import FinetuneIn
from app.api.settings import Settings
from outlier_core.load.models import LoadedModel
from outlier_core.select.masks import SelectionMask
from outlier_core.tune.budget import check_finetune
from outlier_core.tune.train_data import TokenData, TrainConfig


def check_budget(model: LoadedModel, body: FinetuneIn, mask: SelectionMask, config: TrainConfig, data: TokenData, processes: int, settings: Settings) -> None:
    """422 when the text passes `max_train_tokens` or the largest run would not fit in
    `finetune_memory_share` of the free memory (or of a run process's `run_memory_mb`)."""
    check_finetune(
        model, mask, ("mask", *body.baselines), config, data, processes,
        share=settings.finetune_memory_share,
        max_tokens=settings.max_train_tokens,
        token_field="data_text" if body.data_text is not None else "data",
        memory_cap=settings.run_memory_mb * 2**20 if settings.run_memory_mb else None,
    )
