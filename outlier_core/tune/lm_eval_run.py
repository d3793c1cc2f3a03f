"""Evaluation through lm-evaluation-harness: the bundled task offline, standard tasks by name.

lm-eval scores the bridge's underlying Hugging Face model, so a tuned model is scored with
its deltas on. A bundled task (`outlier_core/data/tasks/<name>/<name>.yaml`) goes to lm-eval
as its config with the data files made absolute, so it runs offline from wherever the
package lies and reads only local files; any other name goes to lm-eval unchanged.
Standard tasks download their data: they need the hub, which `load.models` turns off by
default (set HF_HUB_OFFLINE=0 where it is reachable).

Scored sequences follow the project's BOS rule (`load.tokens`): with `prepend_bos` every
log-likelihood context starts with BOS once, as the task data is trained
(`task_data.tokenize`). lm-eval alone would add none for SmolLM2, whose tokenizer adds none.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import datasets
import yaml
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

from outlier_core.errors import InputError
from outlier_core.load.models import LoadedModel
from outlier_core.tune.task_data import BUNDLED_TASKS, bundled_task_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LmEvalResult:
    scores: dict[str, dict[str, float]]  # task -> metric ("acc", "acc_norm", ...) -> value
    stderr: dict[str, dict[str, float]]  # task -> metric -> its standard error, where lm-eval gives one
    samples: dict[str, int]  # task -> how many of its items were scored


class _ProjectHFLM(HFLM):
    """lm-eval's Hugging Face model with the project's BOS rule and no progress bar.

    The rule reaches log-likelihood requests (multiple choice, the bundled task): their
    context and continuation are encoded as a pair. Generation and rolling-perplexity
    requests keep lm-eval's own encoding."""

    def __init__(self, *args, prepend_bos: bool, bos_token_id: int, **kwargs):
        super().__init__(*args, **kwargs)
        self._prepend_bos = prepend_bos
        self._bos_token_id = bos_token_id

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        context_ids, continuation_ids = super()._encode_pair(context, continuation)
        if self._prepend_bos and context_ids[:1] != [self._bos_token_id]:
            context_ids = [self._bos_token_id, *context_ids]
        return context_ids, continuation_ids

    def loglikelihood(self, requests, disable_tqdm: bool = True):
        return super().loglikelihood(requests, disable_tqdm=disable_tqdm)


def bundled_config(name: str) -> dict:
    """The bundled task's lm-eval config, its data files made absolute."""
    source = bundled_task_dir(name)
    config = yaml.safe_load((source / f"{name}.yaml").read_text(encoding="utf-8"))
    files = config["dataset_kwargs"]["data_files"]
    config["dataset_kwargs"]["data_files"] = {split: str(source / file) for split, file in files.items()}
    return config


@contextmanager
def _quiet_harness() -> Iterator[None]:
    """lm-eval logs every setting it reads and `datasets` draws a bar per split: keep both quiet."""
    harness = logging.getLogger("lm_eval")
    level, bars_were_on = harness.level, datasets.is_progress_bar_enabled()
    harness.setLevel(logging.ERROR)
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        harness.setLevel(level)
        if bars_were_on:
            datasets.enable_progress_bars()


def _numbers(task_results: dict) -> tuple[dict[str, float], dict[str, float]]:
    """lm-eval's "acc,none" / "acc_stderr,none" keys as {"acc": v} and {"acc": stderr}; a
    filter other than "none" stays in the name ("exact_match,strict-match")."""
    scores, stderr = {}, {}
    for key, value in task_results.items():
        metric, _, filter_name = key.partition(",")
        if not filter_name or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # "alias", "sample_len", and "N/A" where lm-eval has no stderr
        name = metric.removesuffix("_stderr") + ("" if filter_name == "none" else f",{filter_name}")
        (stderr if metric.endswith("_stderr") else scores)[name] = float(value)
    return scores, stderr


@functools.cache
def _harness_index() -> TaskManager:
    """Every task lm-eval ships, indexed once per process: it reads ~15,000 YAML files."""
    return TaskManager()


def _resolve(tasks: Sequence[str]) -> tuple[list[str | dict], TaskManager]:
    """Bundled names as their configs, the rest as names; the index only when a name needs it."""
    standard = [name for name in tasks if name not in BUNDLED_TASKS]
    manager = _harness_index() if standard else TaskManager(include_defaults=False)
    unknown = [name for name in standard if name not in manager.all_tasks]
    if unknown:
        raise InputError("tasks", f"unknown to lm-eval: {', '.join(unknown)}")
    return [bundled_config(name) if name in BUNDLED_TASKS else name for name in tasks], manager


def evaluate(
    model: LoadedModel,
    tasks: Sequence[str],
    limit: int | None = None,
    batch_size: int = 16,
    num_fewshot: int | None = None,
    prepend_bos: bool = True,
) -> LmEvalResult:
    """Score `model` on lm-eval tasks by name; `limit` takes each task's first items only."""
    if not tasks or not all(isinstance(name, str) and name for name in tasks):
        raise InputError("tasks", "must be a non-empty list of task names")
    if limit is not None and limit < 1:
        raise InputError("limit", "must be a whole number >= 1")
    hf = model.hf_model
    # lm-eval switches the model to eval mode; put every module's own flag back (a bridged
    # model's top-level flag need not match its blocks', so `train(flag)` would not restore it)
    modes = [(module, module.training) for module in hf.modules()]
    try:
        with _quiet_harness():
            configs, manager = _resolve(tasks)
            harness_model = _ProjectHFLM(
                pretrained=hf, tokenizer=model.tokenizer, batch_size=batch_size,
                prepend_bos=prepend_bos, bos_token_id=model.bos_token_id,
            )
            # no seeds: lm-eval would otherwise reseed Python's, numpy's and torch's global generators
            output = simple_evaluate(
                model=harness_model, tasks=configs, task_manager=manager, limit=limit, num_fewshot=num_fewshot,
                log_samples=False, random_seed=None, numpy_random_seed=None, torch_random_seed=None,
            )
    finally:
        for module, training in modes:
            module.training = training
    numbers = {task: _numbers(values) for task, values in output["results"].items()}
    log.info("lm-eval on %s: %s", model.name, {task: scores for task, (scores, _) in numbers.items()})
    return LmEvalResult(
        scores={task: scores for task, (scores, _) in numbers.items()},
        stderr={task: stderr for task, (_, stderr) in numbers.items() if stderr},
        samples={task: int(counts["effective"]) for task, counts in output.get("n-samples", {}).items()},
    )
