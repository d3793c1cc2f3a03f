"""A fine-tune request's size, checked against the server's settings before it is queued."""

from __future__ import annotations

from app.api.schemas.jobs import FinetuneIn
from app.api.settings import Settings
from outlier_core.intervene.corpus import Corpus
from outlier_core.load.models import LoadedModel
from outlier_core.select.masks import SelectionMask
from outlier_core.tune.budget import check_finetune, check_text
from outlier_core.tune.train_data import TokenData, TrainConfig


def check_data(model: LoadedModel, body: FinetuneIn, corpus: Corpus, settings: Settings) -> None:
    """422 when the training text passes `max_train_tokens`, found before it is tokenized whole."""
    check_text(model, corpus.text, settings.max_train_tokens, "data_text" if body.data_text is not None else "data")


def check_budget(model: LoadedModel, body: FinetuneIn, mask: SelectionMask, config: TrainConfig, data: TokenData, processes: int, settings: Settings) -> None:
    """422 when the largest run would not fit in `finetune_memory_share` of the free memory
    (or of a run process's `run_memory_mb`)."""
    memory_cap = settings.run_memory_mb * 2**20 if settings.run_memory_mb else None
    check_finetune(model, mask, ("mask", *body.baselines), config, data, processes, settings.finetune_memory_share, memory_cap)
