"""What an intervention changes: loss, perplexity, next-token predictions, outliers downstream.

One call compares three arms on the same text: the baseline (cached per prompt, BOS
setting and model state), the intervention, and a control that applies the same
intervention to as many random ordinary coordinates. With activation interventions only,
the intervened and control arms share one forward pass as two batch rows; weight edits
change the weights for every row, so then each arm gets its own pass.

Perplexity is exp(mean next-token NLL) over every position after the first, from one
forward pass when the text fits the context.

A long evaluation text is scored window by window, and a caller may hold the model for one
window at a time: `plan_evaluation` checks the request and scores the prompt,
`score_window` scores one window, `finish` puts the result together (`evaluate_encoded`
does all three). The evaluation text is capped in tokens before any pass runs, and a
`should_stop` callable is polled between windows and at every layer of every pass: when it
answers true the work stops with `Cancelled`, weights and hooks restored.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Annotated, Callable, Iterator, Sequence

import torch
from pydantic import Field

from outlier_core.errors import InputError
from outlier_core.intervene.controls import control_interventions, control_weight_edits
from outlier_core.intervene.corpus import Corpus
from outlier_core.intervene.interventions import (
    Intervention,
    applied,
    check_interventions,
)
from outlier_core.intervene.loss import Loss
from outlier_core.intervene.reference_means import (
    CARRIER_RULE,
    ReferenceMeans,
    reference_means,
)
from outlier_core.intervene.weight_edits import (
    Target,
    WeightEdit,
    edited,
    resolve_edits,
)
from outlier_core.intervene.windows import eval_windows
from outlier_core.load.model_cache import ModelCache, state_token
from outlier_core.load.models import LoadedModel
from outlier_core.load.sites import hook_name
from outlier_core.load.tokens import Encoded, encode
from outlier_core.observe.capture import Scan, scan_encoded

LOGITS_HOOK = "unembed.hook_out"  # (B, T, V); fires even when the forward returns nothing
_baselines = ModelCache(size=64)

ShouldStop = Callable[[], bool]  # polled between windows and layers; true stops the evaluation


class Cancelled(Exception):
    """The caller's `should_stop` answered true: the evaluation stopped where it was."""


class ModelChanged(Exception):
    """The model changed between two windows of one evaluation (a swap, a run's deltas)."""


@contextmanager
def stoppable(model: LoadedModel, should_stop: ShouldStop | None) -> Iterator[None]:
    """Forward passes inside the block raise `Cancelled` at the next layer once `should_stop()` is true."""
    if should_stop is None:
        yield
        return

    def check(x: torch.Tensor, *, hook) -> None:
        if should_stop():
            raise Cancelled("the evaluation was stopped")

    with model.bridge.hooks(fwd_hooks=[(hook_name("resid_pre", layer), check) for layer in range(model.n_layers)]):
        yield


@dataclass(frozen=True)
class Prediction:
    token_id: int
    token: str
    prob: float


@dataclass(frozen=True)
class LayerEffect:
    layer: int
    max_abs_before: float
    max_abs_after: float
    sink_share_before: float  # mean attention queries put on position 0
    sink_share_after: float


@dataclass(frozen=True)
class Arms:
    """The three arms of one comparison, scored on the same text."""

    baseline: Loss
    intervened: Loss
    control: Loss


@dataclass(frozen=True)
class TopK:
    before: tuple[Prediction, ...]
    after: tuple[Prediction, ...]


@dataclass(frozen=True)
class InterventionResult(Arms):
    """The intervention contract of the API and the CLI (`--json`).

    The arms it inherits are scored on the evaluation text. An overflowing intervention
    leaves inf or NaN in the numbers; JSON carries them as null.
    """

    prompt: Annotated[Arms, Field(description="the same three arms scored on the prompt")]
    eval_source: str  # "prompt" or the evaluation text's name
    prepend_bos: bool
    tokens: tuple[str, ...]  # the prompt's
    interventions: tuple[Intervention, ...]
    weight_edits: tuple[WeightEdit, ...]
    control_interventions: Annotated[tuple[Intervention, ...], Field(description="the same interventions moved to random ordinary coordinates")]
    control_weight_edits: tuple[WeightEdit, ...]
    top_k: Annotated[TopK, Field(description="next-token predictions after the prompt")]
    layers: Annotated[tuple[LayerEffect, ...], Field(description="per layer, max |x| and sink share before and after")]


@dataclass(frozen=True)
class _RowScore:
    nll_sum: float
    n_tokens: int
    top: tuple[Prediction, ...]


def _score_rows(model: LoadedModel, ids: torch.Tensor, top_k: int, out: list[_RowScore]) -> Callable:
    """A hook that reduces the logits to per-row NLL sums and last-position top-k, on the device."""

    def hook(logits: torch.Tensor, *, hook) -> None:  # logits: (B, T, V)
        for row in range(logits.shape[0]):
            logp = torch.log_softmax(logits[row].float(), dim=-1)  # (T, V)
            nll = -logp[:-1].gather(-1, ids[row, 1:, None].to(logp.device))[:, 0]  # (T-1,)
            probs, token_ids = logp[-1].exp().topk(top_k)  # (k,), (k,)
            top = tuple(
                Prediction(int(t), model.tokenizer.decode([int(t)]), float(p))
                for t, p in zip(token_ids.tolist(), probs.tolist())
            )
            out.append(_RowScore(float(nll.double().sum()), int(nll.numel()), top))

    return hook


def _forward_scores(model: LoadedModel, ids: torch.Tensor, top_k: int) -> list[_RowScore]:
    scores: list[_RowScore] = []
    with torch.inference_mode(), model.bridge.hooks(fwd_hooks=[(LOGITS_HOOK, _score_rows(model, ids, top_k, scores))]):
        model.bridge(ids, return_type=None)
    return scores


def _scan_and_scores(model: LoadedModel, encoded: Encoded, top_k: int) -> tuple[Scan, list[_RowScore]]:
    """One forward: the scan (which reads batch row 0) and the scores of every row."""
    scores: list[_RowScore] = []
    with model.bridge.hooks(fwd_hooks=[(LOGITS_HOOK, _score_rows(model, encoded.ids, top_k, scores))]):
        scan = scan_encoded(model, encoded, rule=CARRIER_RULE, unembed=True)
    return scan, scores


def _prompt_baseline(model: LoadedModel, encoded: Encoded, top_k: int) -> tuple[Scan, _RowScore]:
    def compute() -> tuple[Scan, _RowScore]:
        scan, scores = _scan_and_scores(model, encoded, top_k)
        return scan, scores[0]

    return _baselines.get(model, ("prompt", tuple(encoded.ids[0].tolist()), top_k), compute)


def _window_baseline(model: LoadedModel, ids: torch.Tensor, top_k: int) -> _RowScore:
    return _baselines.get(model, ("window", tuple(ids[0].tolist()), top_k), lambda: _forward_scores(model, ids, top_k)[0])


def _loss(scores: Sequence[_RowScore]) -> Loss:
    n = sum(s.n_tokens for s in scores)
    return Loss(sum(s.nll_sum for s in scores) / n, n)


def _means_for(model: LoadedModel, interventions: Sequence[Intervention], corpus: Corpus | None, prepend_bos: bool) -> dict[str, ReferenceMeans]:
    sites = {iv.site for iv in interventions if iv.mode == "mean"}
    return {site: reference_means(model, site, corpus, prepend_bos) for site in sites}


def _arm_scores(
    model: LoadedModel,
    ids: torch.Tensor,
    arms: tuple[tuple[Sequence[Intervention], Sequence[Target]], ...],
    means: dict[str, ReferenceMeans],
    top_k: int,
    encoded: Encoded | None = None,
) -> tuple[Scan | None, list[_RowScore]]:
    """Scores of each arm on `ids` (1, T), plus the first arm's scan when `encoded` is given.

    Without weight edits all arms run as batch rows of one forward pass.
    """
    if not any(targets for _, targets in arms):
        batch = ids.expand(len(arms), -1)  # (arms, T)
        with applied(model, [ivs for ivs, _ in arms], means):
            if encoded is None:
                return None, _forward_scores(model, batch, top_k)
            return _scan_and_scores(model, replace(encoded, ids=batch), top_k)
    scan, scores = None, []
    for i, (ivs, targets) in enumerate(arms):
        with edited(model, targets), applied(model, [ivs], means):
            if i == 0 and encoded is not None:
                scan, arm_scores = _scan_and_scores(model, encoded, top_k)
            else:
                arm_scores = _forward_scores(model, ids, top_k)
        scores.extend(arm_scores)
    return scan, scores


def evaluate(
    model: LoadedModel,
    text: str,
    interventions: Sequence[Intervention] = (),
    weight_edits: Sequence[WeightEdit] = (),
    *,
    prepend_bos: bool = True,
    eval_text: Corpus | None = None,
    means_corpus: Corpus | None = None,
    top_k: int = 5,
    seed: int = 0,
    eval_window: int | None = None,
) -> InterventionResult:
    """Baseline vs intervened vs control on `eval_text` (default: the prompt itself)."""
    return evaluate_encoded(
        model, encode(model, text, prepend_bos), interventions, weight_edits,
        eval_text=eval_text, means_corpus=means_corpus, top_k=top_k, seed=seed, eval_window=eval_window,
    )


Arm = tuple[Sequence[Intervention], Sequence[Target]]  # activation interventions, resolved weight edits


@dataclass(frozen=True, eq=False)
class Evaluation:
    """A checked request with its prompt scored: what the windows and the result need."""

    prompt: Encoded
    arms: tuple[Arm, Arm]  # intervened, control
    means: dict[str, ReferenceMeans]
    windows: tuple[torch.Tensor, ...]  # (1, T) each; none when the prompt is the evaluation text
    top_k: int
    eval_source: str
    on_prompt: Arms
    top_k_predictions: TopK
    layers: tuple[LayerEffect, ...]
    state: int  # the model's state token once planned: a window of another state is refused


@dataclass(frozen=True)
class WindowScores:
    baseline: _RowScore
    intervened: _RowScore
    control: _RowScore


def evaluate_encoded(
    model: LoadedModel,
    prompt: Encoded,
    interventions: Sequence[Intervention] = (),
    weight_edits: Sequence[WeightEdit] = (),
    *,
    eval_text: Corpus | None = None,
    means_corpus: Corpus | None = None,
    top_k: int = 5,
    seed: int = 0,
    eval_window: int | None = None,
    max_eval_tokens: int | None = None,
    should_stop: ShouldStop | None = None,
) -> InterventionResult:
    """`evaluate` on an encoded prompt: `plan_evaluation`, every window, `finish`."""
    evaluation = plan_evaluation(
        model, prompt, interventions, weight_edits, eval_text=eval_text, means_corpus=means_corpus,
        top_k=top_k, seed=seed, eval_window=eval_window, max_eval_tokens=max_eval_tokens, should_stop=should_stop,
    )
    return finish(evaluation, [score_window(model, evaluation, i, should_stop) for i in range(len(evaluation.windows))])


def plan_evaluation(
    model: LoadedModel,
    prompt: Encoded,
    interventions: Sequence[Intervention] = (),
    weight_edits: Sequence[WeightEdit] = (),
    *,
    eval_text: Corpus | None = None,
    means_corpus: Corpus | None = None,
    top_k: int = 5,
    seed: int = 0,
    eval_window: int | None = None,
    max_eval_tokens: int | None = None,
    should_stop: ShouldStop | None = None,
) -> Evaluation:
    """Every input checked here, once, before any forward pass: a refusal names the entry at
    fault (`interventions[i].<field>`, `weights[i].<field>`), `position` for a position the
    evaluation text is too short for, or `eval_text` past `max_eval_tokens`. Then the prompt's
    three arms are scored and the control coordinates drawn."""
    interventions = tuple(interventions)
    seq_len = prompt.ids.shape[1]
    _check_request(model, interventions, weight_edits, top_k, seq_len)
    targets = resolve_edits(model, weight_edits)
    windows = eval_windows(model, eval_text, prompt.prepend_bos, eval_window, max_eval_tokens) if eval_text else []
    shortest = min([seq_len, *(w.shape[1] for w in windows)])
    for iv in interventions:
        iv.check_positions(shortest)
    with stoppable(model, should_stop):
        means = _means_for(model, interventions, means_corpus, prompt.prepend_bos)
        scan_before, base_score = _prompt_baseline(model, prompt, top_k)
        generator = torch.Generator().manual_seed(seed)
        control_ivs = control_interventions(model, interventions, scan_before, shortest, generator)
        control_targets = control_weight_edits(model, targets, generator)
        arms = ((interventions, targets), (control_ivs, control_targets))
        scan_after, prompt_scores = _arm_scores(model, prompt.ids, arms, means, top_k, prompt)
    return Evaluation(
        prompt=prompt,
        arms=arms,
        means=means,
        windows=tuple(windows),
        top_k=top_k,
        eval_source=eval_text.name if eval_text else "prompt",
        on_prompt=Arms(_loss([base_score]), _loss(prompt_scores[:1]), _loss(prompt_scores[1:])),
        top_k_predictions=TopK(base_score.top, prompt_scores[0].top),
        layers=_layer_effects(scan_before, scan_after),
        state=state_token(model),
    )


def score_window(model: LoadedModel, evaluation: Evaluation, i: int, should_stop: ShouldStop | None = None) -> WindowScores:
    """The three arms on window `i` of the evaluation text; the model must be as it was planned."""
    if should_stop is not None and should_stop():
        raise Cancelled("the evaluation was stopped")
    if state_token(model) != evaluation.state:
        raise ModelChanged("the model changed while the evaluation ran")
    window = evaluation.windows[i]
    with stoppable(model, should_stop):
        baseline = _window_baseline(model, window, evaluation.top_k)
        _, (intervened, control) = _arm_scores(model, window, evaluation.arms, evaluation.means, evaluation.top_k)
    return WindowScores(baseline, intervened, control)


def finish(evaluation: Evaluation, windows: Sequence[WindowScores]) -> InterventionResult:
    """The result: scored on the windows when there are any, else on the prompt."""
    scored = evaluation.on_prompt
    if windows:
        scored = Arms(_loss([w.baseline for w in windows]), _loss([w.intervened for w in windows]), _loss([w.control for w in windows]))
    (interventions, targets), (control_ivs, control_targets) = evaluation.arms
    return InterventionResult(
        scored.baseline,
        scored.intervened,
        scored.control,
        prompt=evaluation.on_prompt,
        eval_source=evaluation.eval_source,
        prepend_bos=evaluation.prompt.prepend_bos,
        tokens=evaluation.prompt.tokens,
        interventions=tuple(interventions),
        weight_edits=tuple(edit for _, edit in targets),
        control_interventions=tuple(control_ivs),
        control_weight_edits=tuple(edit for _, edit in control_targets),
        top_k=evaluation.top_k_predictions,
        layers=evaluation.layers,
    )


def _check_request(model: LoadedModel, interventions: tuple[Intervention, ...], weight_edits: Sequence[WeightEdit], top_k: int, seq_len: int) -> None:
    if not interventions and not weight_edits:
        raise InputError("interventions", "give at least one activation or weight intervention")
    if not 1 <= top_k <= model.d_vocab:
        raise InputError("top_k", f"must be between 1 and {model.d_vocab}")
    if seq_len < 2:
        raise InputError("text", "needs at least two tokens to score")
    check_interventions(model, interventions, seq_len)


def _layer_effects(before: Scan, after: Scan) -> tuple[LayerEffect, ...]:
    return tuple(
        LayerEffect(b.layer, b.max_abs, a.max_abs, sb, sa)
        for b, a, sb, sa in zip(before.layers, after.layers, before.sink_share, after.sink_share)
    )
