"""Task data: JSONL and save_to_disk rows through `datasets`, chat rows through a chat
template, errors that name the bad line, the seeded split, completion-only labels and loss."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset, DatasetDict

from outlier_core.errors import InputError
from outlier_core.load.models import LoadedModel
from outlier_core.load.tokenizers import byte_tokenizer
from outlier_core.tune.task_data import (
    IGNORE_INDEX,
    Example,
    TaskTokens,
    batches,
    bundled_task_dir,
    completion_loss,
    load_task,
    split_examples,
    tokenize,
)

ROWS = [{"prompt": f"Q{i}:", "completion": f" a{i}"} for i in range(10)]
# a tiny chat template written for these tests: each message on its own line, tagged by role
CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def chat_tokenizer():
    tokenizer = byte_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def test_prompt_completion_jsonl_is_read_through_datasets(tmp_path: Path, tiny: LoadedModel) -> None:
    path = write_jsonl(tmp_path / "task.jsonl", [json.dumps(row) for row in ROWS[:4]] + ["", json.dumps(ROWS[4])])
    task = load_task(path, tiny.tokenizer, eval_fraction=0.4, seed=0)
    assert task.name == "task.jsonl"
    assert (len(task.train), len(task.held_out)) == (3, 2)
    assert sorted(task.train + task.held_out, key=lambda e: e.prompt) == [Example(r["prompt"], r["completion"]) for r in ROWS[:5]]


def test_chat_rows_render_through_the_models_chat_template(tmp_path: Path) -> None:
    conversation = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    path = write_jsonl(tmp_path / "chat.jsonl", [json.dumps({"messages": conversation})] * 2)
    task = load_task(path, chat_tokenizer(), eval_fraction=0.5)
    assert task.train == (Example("<user>hi\n<assistant>", "yo\n"),)


def test_a_save_to_disk_folder_keeps_its_own_test_split(tmp_path: Path, tiny: LoadedModel) -> None:
    DatasetDict({"train": Dataset.from_list(ROWS[:6]), "test": Dataset.from_list(ROWS[6:])}).save_to_disk(tmp_path / "dict")
    task = load_task(tmp_path / "dict", tiny.tokenizer)
    assert [e.prompt for e in task.held_out] == [r["prompt"] for r in ROWS[6:]]
    assert len(task.train) == 6
    Dataset.from_list(ROWS).save_to_disk(tmp_path / "plain")
    assert len(load_task(tmp_path / "plain", tiny.tokenizer, eval_fraction=0.3).held_out) == 3


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([json.dumps(ROWS[0]), "", '{"prompt": "x" "completion": "y"}'], "bad.jsonl line 3 is not JSON"),
        ([json.dumps(ROWS[0]), '{"prompt": "x"}'], "bad.jsonl line 2 needs non-empty \"prompt\" and \"completion\""),
        ([json.dumps(ROWS[0]), "[1, 2]"], "bad.jsonl line 2 is not a JSON object"),
        ([""], "bad.jsonl holds no rows"),
        ([json.dumps(ROWS[0]), "", json.dumps({"prompt": "x", "completion": ""})], "bad.jsonl line 3 needs"),
        ([json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]})], "line 1 must end with an \"assistant\""),
        ([json.dumps({"messages": [{"role": "user"}, {"role": "assistant", "content": "b"}]})], "line 1 has a message without"),
    ],
)
def test_a_malformed_row_names_its_line(tmp_path: Path, lines: list[str], expected: str) -> None:
    with pytest.raises(InputError, match=expected) as caught:
        load_task(write_jsonl(tmp_path / "bad.jsonl", lines), chat_tokenizer())
    assert caught.value.field == "data"


def test_chat_rows_need_a_chat_template(tmp_path: Path, tiny: LoadedModel) -> None:
    conversation = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    path = write_jsonl(tmp_path / "chat.jsonl", [json.dumps(ROWS[0]), json.dumps({"messages": conversation})])
    with pytest.raises(InputError, match="chat.jsonl line 2 is a chat row but the model's tokenizer has no chat template"):
        load_task(path, tiny.tokenizer)


def test_the_held_out_split_is_fixed_by_its_seed() -> None:
    examples = tuple(Example(r["prompt"], r["completion"]) for r in ROWS)
    train, held_out = split_examples(examples, 0.3, seed=3)
    assert (train, held_out) == split_examples(examples, 0.3, seed=3)
    assert split_examples(examples, 0.3, seed=4) != (train, held_out)
    assert len(held_out) == 3 and sorted(train + held_out, key=examples.index) == list(examples)


def test_labels_fall_on_the_completion_only(tiny: LoadedModel) -> None:
    """Hand-laid: BOS, prompt bytes, completion bytes, padding; labels only under the completion."""
    a, b, c = tiny.tokenizer.convert_tokens_to_ids(["a", "b", "c"])
    bos, pad = tiny.bos_token_id, tiny.tokenizer.pad_token_id
    tokens = tokenize(tiny, (Example("ab", "c"), Example("a", "bc")), seq_len=6)
    assert tokens.input_ids.tolist() == [[bos, a, b, c, pad, pad], [bos, a, b, c, pad, pad]]
    assert tokens.labels.tolist() == [[-100, -100, -100, c, -100, -100], [-100, -100, b, c, -100, -100]]
    assert tokenize(tiny, (Example("ab", "c"),), prepend_bos=False).input_ids.tolist() == [[a, b, c]]


def model_with(tokenizer) -> LoadedModel:
    """Only what `tokenize` reads: the tokenizer, BOS and the context length."""
    return LoadedModel("t", None, tokenizer, 1, 1, 1, 1, len(tokenizer), 16, "cpu", torch.float32, 0.0, False, tokenizer.bos_token_id)


def test_a_prompt_that_starts_with_bos_gets_no_second_one() -> None:
    """A chat template may write BOS itself; the sequence still starts with exactly one."""
    tokenizer = byte_tokenizer()
    ids = tokenize(model_with(tokenizer), (Example("<bos>a", "b"),)).input_ids[0].tolist()
    assert ids == [tokenizer.bos_token_id, *tokenizer.convert_tokens_to_ids(["a", "b"])]


def test_too_long_an_example_names_itself(tiny: LoadedModel) -> None:
    with pytest.raises(InputError, match="example 2 is 5 tokens long"):
        tokenize(tiny, (Example("a", "b"), Example("abc", "d")), seq_len=4)


def test_completion_loss_by_hand() -> None:
    logits = torch.tensor([[[0.0, 2.0], [1.0, 0.0], [3.0, 1.0]]])  # (1, 3, 2)
    labels = torch.tensor([[IGNORE_INDEX, 1, 0]])  # position 0 predicts 1, position 1 predicts 0
    expected = -(torch.log_softmax(logits[0, 0], -1)[1] + torch.log_softmax(logits[0, 1], -1)[0]) / 2
    assert completion_loss(logits, labels).item() == pytest.approx(expected.item())


def test_completion_loss_is_hugging_faces_loss_for_these_labels(tiny: LoadedModel, hf_tiny: torch.nn.Module) -> None:
    tokens = tokenize(tiny, (Example("Review: fine\nVerdict:", " zing"), Example("Review: poor\nVerdict:", " plok")))
    with torch.no_grad():
        out = hf_tiny(tokens.input_ids, labels=tokens.labels)
    assert completion_loss(out.logits, tokens.labels).item() == pytest.approx(out.loss.item(), rel=1e-5)


def test_batches_are_seeded_epochs() -> None:
    tokens = TaskTokens(torch.arange(5)[:, None], torch.arange(5)[:, None])
    first = [b.input_ids.flatten().tolist() for b in batches(tokens, 2, 5, seed=1)]
    assert first == [b.input_ids.flatten().tolist() for b in batches(tokens, 2, 5, seed=1)]
    assert sorted(sum(first, [])[:5]) == [0, 1, 2, 3, 4]


def test_the_bundled_task_is_balanced_and_disjoint(tiny: LoadedModel) -> None:
    task = load_task(None, tiny.tokenizer)
    assert (task.name, len(task.train), len(task.held_out)) == ("outlier_reviews", 400, 160)
    for split in (task.train, task.held_out):
        assert sorted({e.completion for e in split}) == [" plok", " zing"]
        assert sum(e.completion == " zing" for e in split) == len(split) // 2
    assert not {e.prompt for e in task.train} & {e.prompt for e in task.held_out}


def test_the_generator_rewrites_the_bundled_files_exactly() -> None:
    script = Path(__file__).parents[1] / "scripts" / "make_review_task.py"
    spec = importlib.util.spec_from_file_location("make_review_task", script)
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    for split, rows in generator.make_task().items():
        assert generator.jsonl(rows) == (bundled_task_dir() / f"{split}.jsonl").read_text(encoding="utf-8")
