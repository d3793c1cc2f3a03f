"""The mean of every coordinate over a reference corpus, for `mean` interventions.

Sun et al. replace a massive activation with its mean over many inputs, taken over the
tokens that carry it (the first token, delimiters), not over all tokens. So per (layer,
dim) we keep two means: over the corpus tokens where that coordinate is massive (the
carriers), and over all the others. An intervention picks between them per entry by
asking whether the entry it replaces is massive. Means are computed once per (model
state, site, corpus, BOS setting, rule) and cached; a changed model misses the cache.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch

from outlier_core.intervene.corpus import Corpus, bundled
from outlier_core.load.hooks import run_hooked
from outlier_core.load.model_cache import ModelCache
from outlier_core.load.models import LoadedModel
from outlier_core.load.sites import canonical_site, hook_name, site_width
from outlier_core.load.tokens import encode
from outlier_core.observe.detect import RELATIVE_RULE, MassiveRule

log = logging.getLogger(__name__)

# The paper's absolute floor (|x| > 100) misses the early phase of small models
# (SmolLM2: |x| ~ 770 at layers 2-10, under 1000x the median); a ratio-only rule sees it.
CARRIER_RULE = RELATIVE_RULE
WINDOW = 128  # tokens per reference sequence, BOS included: many short sequences, many first tokens
MAX_TOKENS = 2048  # of the corpus read; the means settle well before that
BATCH = 8  # sequences per forward pass

_cache = ModelCache(size=16)


@dataclass(frozen=True)
class ReferenceMeans:
    site: str
    corpus: str
    prepend_bos: bool
    rule: MassiveRule
    carrier_mean: torch.Tensor  # (L, W) float32 on the CPU: mean over tokens where the coordinate is massive; 0 where none is
    carrier_count: torch.Tensor  # (L, W) int64: how many corpus tokens carried it
    ordinary_mean: torch.Tensor  # (L, W) float32: mean over the other tokens
    n_sequences: int
    n_tokens: int


def corpus_windows(model: LoadedModel, corpus: Corpus, prepend_bos: bool, window: int = WINDOW, max_tokens: int = MAX_TOKENS) -> torch.Tensor:
    """The corpus as a (N, window) batch of token ids: passages joined, cut, BOS on each row when asked."""
    body = window - 1 if prepend_bos else window
    stream: list[int] = []
    for passage in corpus.passages:
        stream.extend(encode(model, passage + "\n\n", prepend_bos=False).ids[0].tolist())
        if len(stream) >= max_tokens:
            break
    stream = stream[:max_tokens]
    n_rows = max(1, len(stream) // body)  # drop the ragged tail so the batch stays rectangular
    rows = [stream[i * body:(i + 1) * body] for i in range(n_rows)]
    if prepend_bos:
        rows = [[model.bos_token_id, *row] for row in rows]
    return torch.tensor(rows, device=model.device)  # (N, window)


def _accumulator(rule: MassiveRule, sums: dict[str, torch.Tensor], layer: int) -> Callable:
    def hook(h: torch.Tensor, *, hook) -> None:  # h: (B, T, W)
        x = h.double()
        magnitude = x.abs()
        median = magnitude.flatten(1).median(dim=1).values  # (B,): the rule is per sequence, per layer
        threshold = (rule.median_ratio * median).clamp(min=rule.abs_threshold)
        carried = magnitude > threshold[:, None, None]  # (B, T, W)
        home = sums["total"].device  # the layer may run on another device than the sums live on: move (W,) sums, not h
        sums["total"][layer] += x.sum(dim=(0, 1)).to(home)
        sums["carrier"][layer] += (x * carried).sum(dim=(0, 1)).to(home)
        sums["count"][layer] += carried.sum(dim=(0, 1)).to(home)

    return hook


def compute_means(
    model: LoadedModel,
    corpus: Corpus,
    site: str = "resid_post",
    prepend_bos: bool = True,
    rule: MassiveRule = CARRIER_RULE,
) -> ReferenceMeans:
    site = canonical_site(site)
    ids = corpus_windows(model, corpus, prepend_bos)  # (N, T)
    shape = (model.n_layers, site_width(model, site))
    sums = {
        "total": torch.zeros(shape, dtype=torch.float64, device=model.device),
        "carrier": torch.zeros(shape, dtype=torch.float64, device=model.device),
        "count": torch.zeros(shape, dtype=torch.int64, device=model.device),
    }
    hooks = [(hook_name(site, layer), _accumulator(rule, sums, layer)) for layer in range(model.n_layers)]
    for start in range(0, ids.shape[0], BATCH):
        run_hooked(model, ids[start:start + BATCH], hooks, stop_at_layer=model.n_layers)
    n_tokens = ids.numel()
    count = sums["count"]
    carrier_mean = torch.where(count > 0, sums["carrier"] / count.clamp(min=1), 0.0)
    ordinary_mean = (sums["total"] - sums["carrier"]) / (n_tokens - count).clamp(min=1)
    log.info("reference means for %s over %d tokens of %s", site, n_tokens, corpus.name)
    return ReferenceMeans(
        site=site,
        corpus=corpus.name,
        prepend_bos=prepend_bos,
        rule=rule,
        carrier_mean=carrier_mean.float().cpu(),
        carrier_count=count.cpu(),
        ordinary_mean=ordinary_mean.float().cpu(),
        n_sequences=ids.shape[0],
        n_tokens=n_tokens,
    )


def reference_means(
    model: LoadedModel,
    site: str = "resid_post",
    corpus: Corpus | None = None,
    prepend_bos: bool = True,
    rule: MassiveRule = CARRIER_RULE,
) -> ReferenceMeans:
    """Cached `compute_means`: once per (model state, site, corpus content, BOS, rule)."""
    corpus = corpus or bundled()
    site = canonical_site(site)
    key = (site, corpus.key, prepend_bos, rule)
    return _cache.get(model, key, lambda: compute_means(model, corpus, site, prepend_bos, rule))


def clear_cache() -> None:
    _cache.clear()
