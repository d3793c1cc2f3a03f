"""A fine-tune request's data and size, checked against the server's settings before it is queued."""

from __future__ import annotations

from app.api.schemas.jobs import FinetuneIn
from app.api.settings import Settings
from app.api.task_uploads import upload_path
from outlier_core.errors import InputError
from outlier_core.intervene.corpus import BUNDLED, Corpus, bundled, from_text
from outlier_core.load.models import LoadedModel
from outlier_core.select.masks import SelectionMask
from outlier_core.tune.budget import check_finetune, check_text
from outlier_core.tune.task_data import BUNDLED_TASKS
from outlier_core.tune.train_data import TokenData, TrainConfig, load_data, make_data


def check_data(model: LoadedModel, body: FinetuneIn, corpus: Corpus, settings: Settings) -> None:
    """422 when the training text passes `max_train_tokens`, found before it is tokenized whole."""
    check_text(model, corpus.text, settings.max_train_tokens, "data_text" if body.data_text is not None else "data")


def training_data(model: LoadedModel, body: FinetuneIn, config: TrainConfig, settings: Settings) -> tuple[TokenData, str | None]:
    """(the data as the run will read it, the run config's `data`): text packed into blocks, or
    task rows labelled on their completions (a bundled task, or an upload by its id: its stored
    file, by absolute path). 422 naming the field past `max_train_tokens` or with too little data."""
    if body.data_text is not None or body.data in BUNDLED:
        corpus = from_text(body.data_text, "your text", "data_text") if body.data_text is not None else bundled(body.data)
        check_data(model, body, corpus, settings)  # from a prefix of the text
        return make_data(model, corpus, config), None if body.data_text is not None else body.data
    source = body.data if body.data in BUNDLED_TASKS else str(upload_path(settings.runs_dir, body.data).resolve())
    data = load_data(model, source, config)
    tokens = int(data.train.numel())  # rows × the longest row: what a run's batches are cut from
    if tokens > settings.max_train_tokens:
        raise InputError("data", f"the task's training rows take {tokens:,} tokens padded to the longest; this server trains on at most {settings.max_train_tokens:,}")
    return data, source


def check_budget(model: LoadedModel, body: FinetuneIn, mask: SelectionMask, config: TrainConfig, data: TokenData, processes: int, settings: Settings) -> None:
    """422 when the largest run would not fit in `finetune_memory_share` of the free memory
    (or of a run process's `run_memory_mb`)."""
    memory_cap = settings.run_memory_mb * 2**20 if settings.run_memory_mb else None
    check_finetune(model, mask, ("mask", *body.baselines), config, data, processes, settings.finetune_memory_share, memory_cap)
