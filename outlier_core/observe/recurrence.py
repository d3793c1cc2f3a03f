"""Across many prompts: which dims, positions and tokens keep carrying the outliers."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from outlier_core.load.models import LoadedModel
from outlier_core.observe.capture import scan
from outlier_core.observe.detect import PAPER_RULE, MassiveRule


@dataclass(frozen=True)
class Recurrence:
    """Counts are numbers of prompts in which a dim / position / token carried a massive value."""

    n_prompts: int
    dims: tuple[tuple[int, int], ...]  # (dim, prompts), most frequent first
    positions: tuple[tuple[int, int], ...]  # (position, prompts)
    tokens: tuple[tuple[str, int], ...]  # (token string, prompts)
    layers: tuple[tuple[int, int], ...]  # (layer, prompts)


def recurring_outliers(
    model: LoadedModel,
    texts: Iterable[str],
    prepend_bos: bool = True,
    site: str = "resid_post",
    rule: MassiveRule = PAPER_RULE,
) -> Recurrence:
    dims: Counter[int] = Counter()
    positions: Counter[int] = Counter()
    tokens: Counter[str] = Counter()
    layers: Counter[int] = Counter()
    n_prompts = 0
    for text in texts:
        found = scan(model, text, prepend_bos=prepend_bos, site=site, rule=rule).massive
        n_prompts += 1
        dims.update({m.dim for m in found})
        positions.update({m.position for m in found})
        tokens.update({m.token for m in found})
        layers.update({m.layer for m in found})
    return Recurrence(
        n_prompts,
        tuple(dims.most_common()),
        tuple(positions.most_common()),
        tuple(tokens.most_common()),
        tuple(sorted(layers.items())),
    )
