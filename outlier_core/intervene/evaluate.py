"""What an intervention changes: loss, perplexity, next-token predictions, outliers downstream.

One call compares three arms on the same text: the baseline (cached per prompt, BOS
setting and model state), the intervention, and a control that applies the same
intervention to as many random ordinary coordinates. With activation interventions only,
the intervened and control arms share one forward pass as two batch rows; weight edits
change the weights for every row, so then each arm gets its own pass.

Perplexity is exp(mean next-token NLL) over every position after the first, from one
forward pass when the text fits the context.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Annotated, Callable, Sequence

import torch
from pydantic import Field

from outlier_core.errors import InputError
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
    AxisIndex,
    Target,
    WeightEdit,
    edited,
    resolve_edits,
)
from outlier_core.load.model_cache import ModelCache
from outlier_core.load.models import LoadedModel
from outlier_core.load.sites import site_width
from outlier_core.load.tokens import Encoded, encode
from outlier_core.observe.capture import Scan, scan_encoded
from outlier_core.observe.tensor_stats import WeightRule, weight_outlier_mask

log = logging.getLogger(__name__)

LOGITS_HOOK = "unembed.hook_out"  # (B, T, V); fires even when the forward returns nothing
_baselines = ModelCache(size=64)


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


def eval_windows(model: LoadedModel, corpus: Corpus, prepend_bos: bool, window: int | None = None) -> list[torch.Tensor]:
    """The evaluation text as (1, T) id rows: one row when it fits `window` (default: the context).

    Passages are tokenized one by one and rejoined by a blank line, so a text longer than the
    context (or than `max_tokens` of one encode) still goes through the one tokenization path.
    """
    window = min(window or model.n_ctx, model.n_ctx)
    stream: list[int] = []
    for i, passage in enumerate(corpus.passages):
        stream.extend(encode(model, passage if i == 0 else "\n\n" + passage, prepend_bos=False).ids[0].tolist())
    body = window - 1 if prepend_bos else window
    if len(stream) > body:
        dropped = len(stream) % body
        if dropped:
            log.info("scoring %s in %d windows of %d tokens; the last %d tokens are left out",
                     corpus.name, len(stream) // body, window, dropped)
        stream = stream[: len(stream) - dropped]
    rows = [stream[i:i + body] for i in range(0, len(stream), body)]
    if prepend_bos:
        rows = [[model.bos_token_id, *row] for row in rows]
    if len(rows[0]) < 2:
        raise InputError("eval_text", "needs at least two tokens to score")
    return [torch.tensor([row], device=model.device) for row in rows]


def _pick(pool: list[int], fallback: list[int], n: int, generator: torch.Generator) -> tuple[int, ...]:
    source = pool if len(pool) >= n else fallback
    order = torch.randperm(len(source), generator=generator)[:n]
    return tuple(sorted(source[i] for i in order.tolist()))


def control_interventions(
    model: LoadedModel, interventions: Sequence[Intervention], scan: Scan, seq_len: int, generator: torch.Generator
) -> tuple[Intervention, ...]:
    """Each intervention moved to as many random ordinary positions and dims, same layer, site and mode.

    Ordinary: not a token that carries a massive activation at any layer of the baseline, not
    a dim that is massive anywhere (for residual-width sites), and not an intervened coordinate.
    """
    carrier_positions = {m.position for m in scan.massive}
    massive_dims = {m.dim for m in scan.massive}
    controls = []
    for iv in interventions:
        width = site_width(model, iv.site)
        position, dim = iv.position, iv.dim
        if position != "all":
            others = [p for p in range(seq_len) if p not in position]
            position = _pick([p for p in others if p not in carrier_positions], others or list(range(seq_len)), len(position), generator)
        if dim != "all":
            others = [d for d in range(width) if d not in dim]
            ordinary = [d for d in others if d not in massive_dims] if width == model.d_model else others
            dim = _pick(ordinary, others, len(dim), generator)
        controls.append(replace(iv, position=position, dim=dim))
    return tuple(controls)


def _other_index(i: AxisIndex, size: int, generator: torch.Generator) -> AxisIndex:
    """A uniformly random index other than `i` along an axis of `size`; "all" stays."""
    if i == "all" or size == 1:
        return i
    return (i + 1 + int(torch.randint(size - 1, (1,), generator=generator))) % size


def control_weight_edits(targets: Sequence[Target], generator: torch.Generator) -> tuple[Target, ...]:
    """Each edit moved to a random other index on every indexed axis; a single entry avoids weight outliers."""
    controls = []
    for p, edit in targets:
        outliers = None if "all" in edit.index else weight_outlier_mask(p.detach(), WeightRule())
        for _ in range(100):  # outliers are a small share of entries: a few draws suffice
            index = tuple(_other_index(i, size, generator) for i, size in zip(edit.index, p.shape))
            if outliers is None or not bool(outliers[index]):
                break
        controls.append((p, replace(edit, index=index)))
    return tuple(controls)


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
) -> InterventionResult:
    """`evaluate` on an encoded prompt. Every input is checked here, once, before any forward pass:
    a refusal names the entry at fault (`interventions[i].<field>`, `weights[i].<field>`), or
    `position` for a position the evaluation text is too short for."""
    interventions = tuple(interventions)
    seq_len = prompt.ids.shape[1]
    _check_request(model, interventions, weight_edits, top_k, seq_len)
    targets = resolve_edits(model, weight_edits)
    windows = eval_windows(model, eval_text, prompt.prepend_bos, eval_window) if eval_text else []
    shortest = min([seq_len, *(w.shape[1] for w in windows)])
    for iv in interventions:
        iv.check_positions(shortest)
    means = _means_for(model, interventions, means_corpus, prompt.prepend_bos)

    scan_before, base_score = _prompt_baseline(model, prompt, top_k)
    generator = torch.Generator().manual_seed(seed)
    control_ivs = control_interventions(model, interventions, scan_before, shortest, generator)
    control_targets = control_weight_edits(targets, generator)
    arms = ((interventions, targets), (control_ivs, control_targets))
    scan_after, prompt_scores = _arm_scores(model, prompt.ids, arms, means, top_k, prompt)
    on_prompt = Arms(_loss([base_score]), _loss(prompt_scores[:1]), _loss(prompt_scores[1:]))
    scored = _window_arms(model, windows, arms, means, top_k) if windows else on_prompt
    return InterventionResult(
        scored.baseline,
        scored.intervened,
        scored.control,
        prompt=on_prompt,
        eval_source=eval_text.name if eval_text else "prompt",
        prepend_bos=prompt.prepend_bos,
        tokens=prompt.tokens,
        interventions=interventions,
        weight_edits=tuple(edit for _, edit in targets),
        control_interventions=control_ivs,
        control_weight_edits=tuple(edit for _, edit in control_targets),
        top_k=TopK(base_score.top, prompt_scores[0].top),
        layers=_layer_effects(scan_before, scan_after),
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


def _window_arms(
    model: LoadedModel,
    windows: list[torch.Tensor],
    arms: tuple[tuple[Sequence[Intervention], Sequence[Target]], ...],
    means: dict[str, ReferenceMeans],
    top_k: int,
) -> Arms:
    """The three arms scored over the evaluation text's windows together."""
    baseline = _loss([_window_baseline(model, w, top_k) for w in windows])
    window_arms = [_arm_scores(model, w, arms, means, top_k)[1] for w in windows]
    return Arms(baseline, _loss([s[0] for s in window_arms]), _loss([s[1] for s in window_arms]))
