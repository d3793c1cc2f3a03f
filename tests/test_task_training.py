"""A fine-tune on task data: routed by `load_data`, trained and scored on the completion tokens only."""

from __future__ import annotations

import json

import pytest
import torch

from outlier_core.select.masks import SelectionMask
from outlier_core.tune import train_data
from outlier_core.tune.comparison import compare
from outlier_core.tune.evaluation import batch_loss, held_out_loss
from outlier_core.tune.task_data import IGNORE_INDEX
from outlier_core.tune.train_data import TrainConfig, is_task, load_data

DOWN = "model.layers.1.mlp.down_proj.weight"
ROWS = [{"prompt": f"Q{i}: is {i} even?\nA:", "completion": " yes" if i % 2 == 0 else " no"} for i in range(12)]


@pytest.fixture()
def task_file(tmp_path):
    path = tmp_path / "task.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n", encoding="utf-8")
    return path


def test_sources_route_to_task_or_packed_text(tmp_path, task_file):
    texts = tmp_path / "texts.jsonl"
    texts.write_text('{"text": "a plain text"}\n', encoding="utf-8")
    (tmp_path / "notes.txt").write_text("plain", encoding="utf-8")
    assert is_task("outlier_reviews") and is_task(str(task_file)) and is_task(str(tmp_path))
    assert not any(is_task(s) for s in (None, "prose", "code", str(texts), str(tmp_path / "notes.txt")))


def test_task_rows_carry_labels_on_the_completion_only(tiny, task_file):
    config = TrainConfig(eval_fraction=0.25, seed=1)
    data = load_data(tiny, str(task_file), config)
    assert data.train_labels is not None and data.train.shape == data.train_labels.shape
    assert (data.train.shape[0], data.held_out.shape[0]) == (9, 3)
    assert torch.all(data.train[:, 0] == tiny.bos_token_id)
    for ids, labels in zip(data.train, data.train_labels):
        labelled = ids[labels != IGNORE_INDEX].tolist()
        assert tiny.tokenizer.decode(labelled) in (" yes", " no")
    assert data.scan_block.numel() == int(torch.nonzero(data.held_out_labels[0] != IGNORE_INDEX).max()) + 1
    packed = load_data(tiny, "code", config)
    assert packed.train_labels is None and packed.scan_block.numel() == packed.held_out.shape[1]


def test_completion_loss_is_hugging_faces_loss_with_labels(tiny, hf_tiny, task_file):
    data = load_data(tiny, str(task_file), TrainConfig(eval_fraction=0.25))
    ids, labels = data.train[:4], data.train_labels[:4]
    with torch.no_grad():
        expected = hf_tiny(ids, labels=labels).loss
        assert float(batch_loss(tiny, ids, labels)) == pytest.approx(float(expected), rel=1e-5)
    result = held_out_loss(tiny, data.held_out, 2, labels=data.held_out_labels)
    assert result.n_tokens == int((data.held_out_labels[:, 1:] != IGNORE_INDEX).sum())
    with torch.no_grad():
        assert result.loss == pytest.approx(float(hf_tiny(data.held_out, labels=data.held_out_labels).loss), rel=1e-5)


def test_a_comparison_trains_on_the_bundled_task(tiny, tmp_path):
    mask = SelectionMask.empty(tiny, "m").add(tiny, DOWN, "columns", [5], "click")
    config = TrainConfig(steps=2, batch_size=2, lr=1e-2, max_eval_blocks=6)
    data = load_data(tiny, "outlier_reviews", config)
    assert data.source == "outlier_reviews" and data.held_out.shape[0] == 6
    result = compare(tiny, mask, ("random",), data, config, tmp_path)
    answer_tokens = int((data.held_out_labels[:, 1:] != IGNORE_INDEX).sum())
    assert result.eval_before.n_tokens == answer_tokens  # the loss counts the completions' tokens, not the prompts'
    assert all(r.eval_after.n_tokens == answer_tokens and len(r.train_loss) == 2 for r in result.runs)


def test_plain_text_batches_stay_tensors(tiny):
    config = TrainConfig(steps=2, batch_size=2, seq_len=16)
    data = train_data.make_data(tiny, train_data.load_corpus("code"), config)
    assert all(isinstance(b, torch.Tensor) and b.shape == (2, 16) for b in train_data.batches(data, config))


def test_the_finetune_command_trains_on_the_bundled_task(tiny, tmp_path, capsys):
    from app.cli.main import main

    mask = SelectionMask.empty(tiny, "m").add(tiny, DOWN, "columns", [5], "click")
    mask.save(tmp_path / "mask.json")
    argv = ["finetune", "--model", "tiny-random", "--device", "cpu", "--mask", str(tmp_path / "mask.json"), "--data", "outlier_reviews",
            "--steps", "1", "--batch-size", "2", "--runs-dir", str(tmp_path / "runs"), "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["data"]["source"] == "outlier_reviews" and result["runs"][0]["eval_after"]["tokens"] == result["eval_before"]["tokens"]
