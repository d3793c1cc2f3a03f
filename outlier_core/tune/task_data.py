"""Task data: prompt/completion pairs, trained with the loss on the completion tokens only.

A task is JSONL rows `{"prompt", "completion"}` or chat rows `{"messages": [{"role",
"content"}, ...]}` rendered through the model's chat template (the last message, the
assistant's reply, is the completion). Files are read through Hugging Face `datasets`
(`.json` / `.jsonl`, or a folder written by `save_to_disk`), so a researcher's own data set
works as it is. The bundled task ships its own train and test files; other data keeps the
held-out rows of a dataset's own `test` split, or holds out a seeded share.

BOS follows the project's one rule (`load.tokens`): the tokenizer adds nothing, and a
sequence starts with BOS once when asked, never twice: a chat template that writes BOS
itself keeps its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from outlier_core.errors import InputError
from outlier_core.load.models import LoadedModel

TASKS_DIR = Path(__file__).parents[1] / "data" / "tasks"  # packaged as outlier_core/data/tasks/<name>/
BUNDLED_TASKS = ("outlier_reviews",)
DEFAULT_TASK = "outlier_reviews"
IGNORE_INDEX = -100  # the label cross-entropy skips: prompt and padding positions
HELD_OUT_SPLITS = ("test", "validation")


@dataclass(frozen=True)
class Example:
    prompt: str
    completion: str


@dataclass(frozen=True)
class TaskData:
    name: str
    train: tuple[Example, ...]
    held_out: tuple[Example, ...]


@dataclass(frozen=True)
class TaskTokens:
    input_ids: torch.Tensor  # (N, S) int64, right-padded
    labels: torch.Tensor  # (N, S) int64: the completion's ids where they sit in input_ids, IGNORE_INDEX elsewhere


def bundled_task_dir(name: str = DEFAULT_TASK) -> Path:
    if name not in BUNDLED_TASKS:
        raise InputError("task", f"unknown bundled task {name!r}; choose one of {', '.join(BUNDLED_TASKS)}")
    return TASKS_DIR / name


def _lines(path: Path, field: str) -> list[tuple[int, str]]:
    """The non-blank lines with their 1-based numbers: `datasets` skips blank lines, so row i
    of a JSONL file is the i-th of these."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise InputError(field, f"{path.name} is not UTF-8 text") from err
    return [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]


def _locate_bad_line(path: Path, field: str, cause: Exception) -> InputError:
    """`datasets` refused the file; name the first line that is not JSON or not a row."""
    for number, line in _lines(path, field):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            return InputError(field, f"{path.name} line {number} is not JSON ({err.msg})")
        if not isinstance(row, dict):
            return InputError(field, f"{path.name} line {number} is not a JSON object")
    return InputError(field, f"{path.name} could not be read as rows of one shape ({cause})")


def _read_file(path: Path, field: str) -> tuple[list[dict], list[str]]:
    """The rows of a .json/.jsonl file and where each sits ("line 4" or "row 4")."""
    from datasets import load_dataset
    from datasets.exceptions import DatasetGenerationError

    lines = _lines(path, field)
    if not lines:
        raise InputError(field, f"{path.name} holds no rows")
    try:
        rows = load_dataset("json", data_files=str(path), split="train").to_list()
    except DatasetGenerationError as err:
        if path.suffix == ".jsonl":
            raise _locate_bad_line(path, field, err) from err
        raise InputError(field, f"{path.name} is not a JSON list of rows ({err})") from err
    if path.suffix == ".jsonl":
        return rows, [f"line {number}" for number, _ in lines]
    return rows, [f"row {n}" for n in range(1, len(rows) + 1)]


def read_rows(source: str | Path, field: str = "data") -> dict[str, tuple[list[dict], list[str]]]:
    """Split name -> (rows, where each row sits) from a .json/.jsonl file or a save_to_disk folder."""
    from datasets import Dataset, load_from_disk

    path = Path(source).expanduser()
    if path.is_file() and path.suffix in (".json", ".jsonl"):
        return {"train": _read_file(path, field)}
    if not path.is_dir():
        raise InputError(field, f"{source} is not a .json or .jsonl file or a folder written by datasets' save_to_disk")
    try:
        loaded = load_from_disk(str(path))
    except FileNotFoundError as err:
        raise InputError(field, f"{source} is not a folder written by datasets' save_to_disk") from err
    splits = {"train": loaded} if isinstance(loaded, Dataset) else dict(loaded)
    return {split: (data.to_list(), [f"{split} row {n}" for n in range(1, len(data) + 1)]) for split, data in splits.items()}


def _chat_example(messages: Any, tokenizer: Any, where: str, field: str) -> Example:
    """The conversation before the last message, rendered with the generation prompt; then the reply."""
    if not isinstance(messages, list) or len(messages) < 2:
        raise InputError(field, f"{where} needs at least two messages, the last the assistant's reply")
    for message in messages:
        if not isinstance(message, dict) or not all(isinstance(message.get(k), str) for k in ("role", "content")):
            raise InputError(field, f"{where} has a message without \"role\" and \"content\" strings")
    if messages[-1]["role"] != "assistant":
        raise InputError(field, f"{where} must end with an \"assistant\" message (the completion)")
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(field, f"{where} is a chat row but the model's tokenizer has no chat template")
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    whole = tokenizer.apply_chat_template(messages, tokenize=False)
    if not whole.startswith(prompt) or len(whole) == len(prompt):
        raise InputError(field, f"{where}: the chat template does not render the reply after the prompt")
    return Example(prompt, whole[len(prompt):])


def to_example(row: dict, tokenizer: Any, where: str, field: str = "data") -> Example:
    """One row as an Example; `where` ("data.jsonl line 4") names it in errors."""
    if row.get("messages") is not None:
        return _chat_example(row["messages"], tokenizer, where, field)
    prompt, completion = row.get("prompt"), row.get("completion")
    if not isinstance(prompt, str) or not isinstance(completion, str) or not prompt or not completion:
        raise InputError(field, f"{where} needs non-empty \"prompt\" and \"completion\" strings, or \"messages\"")
    return Example(prompt, completion)


def to_examples(rows: list[dict], places: list[str], tokenizer: Any, name: str, field: str = "data") -> tuple[Example, ...]:
    if not rows:
        raise InputError(field, f"{name} holds no rows")
    return tuple(to_example(row, tokenizer, f"{name} {place}", field) for row, place in zip(rows, places, strict=True))


def split_examples(examples: tuple[Example, ...], eval_fraction: float, seed: int) -> tuple[tuple[Example, ...], tuple[Example, ...]]:
    """(train, held_out): a seeded share held out, the same for every method and run with this seed."""
    if not 0 < eval_fraction < 1:
        raise InputError("eval_fraction", "must be between 0 and 1")
    if len(examples) < 2:
        raise InputError("data", "at least two rows are needed to hold one out")
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
    n_eval = min(max(1, round(len(examples) * eval_fraction)), len(examples) - 1)
    return tuple(examples[i] for i in order[n_eval:]), tuple(examples[i] for i in order[:n_eval])


def load_task(source: str | Path | None, tokenizer: Any, eval_fraction: float = 0.2, seed: int = 0, field: str = "data") -> TaskData:
    """None or a bundled name: its own train/test files. A file or folder: its `test` (or
    `validation`) split if it has one, else a seeded share of its rows held out."""
    if source is None or source in BUNDLED_TASKS:
        folder = bundled_task_dir(source or DEFAULT_TASK)
        train, test = (to_examples(*_read_file(folder / f"{s}.jsonl", field), tokenizer, f"{s}.jsonl", field) for s in ("train", "test"))
        return TaskData(folder.name, train, test)
    name = Path(source).name
    splits = read_rows(source, field)
    if "train" not in splits:
        raise InputError(field, f"{name} has splits {', '.join(splits)}; a \"train\" split is needed")
    train = to_examples(*splits["train"], tokenizer, name, field)
    held_split = next((s for s in HELD_OUT_SPLITS if s in splits), None)
    if held_split is None:
        return TaskData(name, *split_examples(train, eval_fraction, seed))
    return TaskData(name, train, to_examples(*splits[held_split], tokenizer, name, field))


def _example_ids(model: LoadedModel, example: Example, prepend_bos: bool) -> tuple[list[int], int]:
    """(ids, where the completion starts): prompt and completion encoded apart, so the labels
    are exactly the completion's own tokens."""
    prompt = model.tokenizer(example.prompt, add_special_tokens=False).input_ids
    completion = model.tokenizer(example.completion, add_special_tokens=False).input_ids
    if prepend_bos and prompt[:1] != [model.bos_token_id]:
        prompt = [model.bos_token_id, *prompt]
    return prompt + completion, len(prompt)


def tokenize(model: LoadedModel, examples: tuple[Example, ...], seq_len: int | None = None, prepend_bos: bool = True) -> TaskTokens:
    """Every example right-padded to seq_len (None: the longest); labels only on the completion."""
    encoded = [_example_ids(model, example, prepend_bos) for example in examples]
    longest = max(len(ids) for ids, _ in encoded)
    length = seq_len or longest
    if length > model.n_ctx:
        raise InputError("seq_len", f"must be at most the model's context, {model.n_ctx}")
    if longest > length:
        number, size = next((i, len(ids)) for i, (ids, _) in enumerate(encoded, start=1) if len(ids) > length)
        raise InputError("seq_len", f"example {number} is {size} tokens long; raise seq_len to at least {longest}")
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else model.bos_token_id
    input_ids = torch.full((len(encoded), length), pad, dtype=torch.int64)  # (N, S)
    labels = torch.full((len(encoded), length), IGNORE_INDEX, dtype=torch.int64)  # (N, S)
    for row, (ids, start) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, start : len(ids)] = torch.tensor(ids[start:])
    return TaskTokens(input_ids, labels)


def completion_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the labelled (completion) tokens; position t predicts token t+1.

    logits: (B, S, V); labels: (B, S) aligned with the input ids, IGNORE_INDEX where no loss
    falls. The same number as a Hugging Face causal LM's `loss` given these labels.
    """
    predicted = logits[:, :-1].flatten(0, 1).float()  # (B*(S-1), V)
    target = labels[:, 1:].flatten()  # (B*(S-1),)
    return F.cross_entropy(predicted, target, ignore_index=IGNORE_INDEX)


def batches(tokens: TaskTokens, batch_size: int, steps: int, seed: int) -> Iterator[TaskTokens]:
    """The training batches in order: seeded epochs over the examples, the same for every method."""
    generator = torch.Generator().manual_seed(seed)
    n = tokens.input_ids.shape[0]
    size = min(batch_size, n)
    order: list[int] = []
    for _ in range(steps):
        while len(order) < size:
            order += torch.randperm(n, generator=generator).tolist()
        yield TaskTokens(tokens.input_ids[order[:size]], tokens.labels[order[:size]])  # (B, S) each
        order = order[size:]
