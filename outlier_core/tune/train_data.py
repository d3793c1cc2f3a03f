"""What a fine-tune runs on: its settings, and its text packed into token blocks.

Data is the bundled corpus (`prose`, `code`), a text file, or a JSONL file of texts. It is
packed into blocks of BOS + (seq_len - 1) tokens; a seeded share of the blocks is held out
for evaluation, and the training batches are drawn in seeded epochs, so every method of a
comparison sees the same batches.

Task data (`task_data`: a bundled task, prompt/completion or chat rows) trains with the
loss on the completion tokens only: its rows, padded to the longest, come with labels, and
`load_data` routes a source to one path or the other (`is_task`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Union, get_args

import torch
from pydantic import ConfigDict

from outlier_core.errors import InputError
from outlier_core.intervene.corpus import (
    BUNDLED,
    DEFAULT_CORPUS,
    MAX_FILE_BYTES,
    Corpus,
    bundled,
    from_file,
)
from outlier_core.load.models import LoadedModel
from outlier_core.tune.task_data import BUNDLED_TASKS, IGNORE_INDEX, TaskData, load_task, tokenize

Checkpoint = Literal["auto", "on", "off"]
CHECKPOINT_CHOICES = get_args(Checkpoint)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 50
    lr: float = 1e-3  # the sparse methods and LoRA: few coordinates need a larger step than a full fine-tune
    full_lr: float = 1e-4  # a usual rate for fully fine-tuning a small LM, where every weight moves
    weight_decay: float = 0.01  # on the trained values only (a delta decays towards the base)
    batch_size: int = 4
    seq_len: int = 64  # tokens per block, BOS included
    eval_fraction: float = 0.2
    max_eval_blocks: int = 32  # the held-out split is capped so evaluation stays quick
    max_grad_norm: float = 1.0
    seed: int = 0
    lora_rank: int | None = None  # None: the rank (below rank 1, the targets) whose count is closest to the mask's
    checkpoint: Checkpoint = "auto"  # recompute block activations in the backward pass: "on", "off", or "auto" (coordinate tunings only)

    # every field is always written, defaults included: the API's docs list them all as present
    __pydantic_config__ = ConfigDict(json_schema_serialization_defaults_required=True)

    def __post_init__(self) -> None:
        positive_ints = {"steps": self.steps, "batch_size": self.batch_size, "max_eval_blocks": self.max_eval_blocks}
        for name, value in positive_ints.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(name, "must be a whole number >= 1")
        if isinstance(self.seq_len, bool) or not isinstance(self.seq_len, int) or self.seq_len < 2:
            raise InputError("seq_len", "must be a whole number >= 2")
        for name in ("lr", "full_lr", "max_grad_norm"):
            value = getattr(self, name)
            if not (0 < value < math.inf):
                raise InputError(name, "must be a finite number > 0")
        if not (0 <= self.weight_decay < math.inf):
            raise InputError("weight_decay", "must be a finite number >= 0")
        if not 0 < self.eval_fraction < 1:
            raise InputError("eval_fraction", "must be between 0 and 1")
        if self.checkpoint not in CHECKPOINT_CHOICES:
            raise InputError("checkpoint", f"must be one of {', '.join(CHECKPOINT_CHOICES)}")
        if self.lora_rank is not None and (isinstance(self.lora_rank, bool) or not isinstance(self.lora_rank, int) or self.lora_rank < 1):
            raise InputError("lora_rank", "must be a whole number >= 1")


def parse_jsonl(text: str, name: str, field_name: str = "data") -> Corpus:
    """One text per line: a JSON string, or an object with a "text" string (blank lines skipped)."""
    texts = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(field_name, f"{name} line {number} is not JSON ({err.msg})") from err
        value = item.get("text") if isinstance(item, dict) else item
        if not isinstance(value, str) or not value.strip():
            raise InputError(field_name, f"{name} line {number} has no non-empty \"text\" string")
        texts.append(value.strip())
    if not texts:
        raise InputError(field_name, f"{name} holds no texts")
    return Corpus(name, tuple(texts))


def load_corpus(source: str | None = None, field_name: str = "data") -> Corpus:
    """None or a bundled name (`prose`, `code`): the bundled texts; else a .txt or .jsonl file.

    Reads files on this machine: a server should pass user uploads to `corpus.from_text`
    or `parse_jsonl` instead.
    """
    if source is None or source in BUNDLED:
        return bundled(source or DEFAULT_CORPUS)
    path = Path(source).expanduser()
    if path.suffix != ".jsonl":
        return from_file(path, field_name)
    if not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
        raise InputError(field_name, f"{source} is not a readable JSONL file of at most {MAX_FILE_BYTES} bytes")
    try:
        return parse_jsonl(path.read_text(encoding="utf-8"), path.name, field_name)
    except UnicodeDecodeError as err:
        raise InputError(field_name, f"{path} is not UTF-8 text") from err


@dataclass(frozen=True)
class DataSummary:
    source: str
    seq_len: int
    train_blocks: int
    held_out_blocks: int


@dataclass(frozen=True)
class TokenData:
    train: torch.Tensor  # (N_train, S) int64, each block starts with BOS
    held_out: torch.Tensor  # (N_eval, S)
    source: str
    train_labels: torch.Tensor | None = None  # (N_train, S): task data's completion ids, IGNORE_INDEX elsewhere; None: every next token
    held_out_labels: torch.Tensor | None = None  # (N_eval, S)

    @property
    def summary(self) -> DataSummary:
        return DataSummary(self.source, int(self.train.shape[1]), int(self.train.shape[0]), int(self.held_out.shape[0]))

    @property
    def scan_block(self) -> torch.Tensor:
        """The first held-out block for an outlier scan (S',): a task row without its padding."""
        if self.held_out_labels is None:
            return self.held_out[0]
        end = int(torch.nonzero(self.held_out_labels[0] != IGNORE_INDEX).max()) + 1
        return self.held_out[0, :end]


def make_data(model: LoadedModel, corpus: Corpus, config: TrainConfig) -> TokenData:
    """Pack the corpus into blocks of BOS + (seq_len - 1) tokens; a seeded share is held out.

    The tokenizer adds nothing, as in `tokens.encode`; the whole corpus is tokenized at
    once because it may be longer than the model's context.
    """
    if config.seq_len > model.n_ctx:
        raise InputError("seq_len", f"must be at most the model's context, {model.n_ctx}")
    ids = torch.tensor(model.tokenizer(corpus.text, add_special_tokens=False).input_ids, dtype=torch.int64)  # (N,)
    body = config.seq_len - 1
    n_blocks = ids.numel() // body
    if n_blocks < 2:
        raise InputError("data", f"{corpus.name} has {ids.numel()} tokens: at least two blocks of {body} are needed")
    blocks = ids[: n_blocks * body].reshape(n_blocks, body)  # (B, S-1)
    blocks = torch.cat([torch.full((n_blocks, 1), model.bos_token_id), blocks], dim=1)  # (B, S)
    order = torch.randperm(n_blocks, generator=torch.Generator().manual_seed(config.seed))
    n_eval = min(max(1, round(n_blocks * config.eval_fraction)), config.max_eval_blocks, n_blocks - 1)
    return TokenData(blocks[order[n_eval:]], blocks[order[:n_eval]], corpus.name)


Batch = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]  # ids (B, S), or task data's (ids, labels)


def batches(data: TokenData, config: TrainConfig) -> Iterator[Batch]:
    """The training batches in order: seeded epochs over the train blocks, the same for every method."""
    generator = torch.Generator().manual_seed(config.seed)
    size = min(config.batch_size, data.train.shape[0])
    order: list[int] = []
    for _ in range(config.steps):
        while len(order) < size:
            order += torch.randperm(data.train.shape[0], generator=generator).tolist()
        rows = order[:size]
        yield data.train[rows] if data.train_labels is None else (data.train[rows], data.train_labels[rows])  # (B, S) each
        order = order[size:]


def make_task_data(model: LoadedModel, task: TaskData, config: TrainConfig) -> TokenData:
    """Task rows, BOS first, right-padded to the longest row (seq_len sizes packed text only),
    labelled on their completion tokens; at most `max_eval_blocks` held-out rows."""
    held_out = task.held_out[: config.max_eval_blocks]
    tokens = tokenize(model, task.train + held_out)  # one length for both splits
    n = len(task.train)
    return TokenData(tokens.input_ids[:n], tokens.input_ids[n:], task.name, tokens.labels[:n], tokens.labels[n:])


def is_task(source: str | None) -> bool:
    """Whether `source` is task data: a bundled task, a .json file or a `save_to_disk` folder,
    or a JSONL file whose first row is an object with "prompt" or "messages"."""
    if source is None:
        return False
    if source in BUNDLED_TASKS:
        return True
    path = Path(source).expanduser()
    if path.is_dir() or path.suffix == ".json":
        return True
    if path.suffix != ".jsonl" or not path.is_file():
        return False
    with path.open(encoding="utf-8", errors="replace") as f:
        first = next((line for line in f if line.strip()), "")
    try:
        row = json.loads(first)
    except json.JSONDecodeError:
        return False
    return isinstance(row, dict) and ("prompt" in row or "messages" in row)


def load_data(model: LoadedModel, source: str | None, config: TrainConfig, field_name: str = "data") -> TokenData:
    """Task data (`is_task`) as labelled rows, anything else as packed text blocks."""
    if is_task(source):
        return make_task_data(model, load_task(source, model.tokenizer, config.eval_fraction, config.seed, field_name), config)
    return make_data(model, load_corpus(source, field_name), config)
