"""Capture what a forward pass shows about outliers, reduced on the device as it runs.

Each capture registers only the hooks it needs inside `bridge.hooks(...)`, which removes
them on exit (errors included), and reduces every tensor inside its hook, so nothing
larger than a summary outlives the forward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Callable, Sequence

import torch
from pydantic import Field

from outlier_core.errors import InputError
from outlier_core.load.hooks import Hook, check_layer, run_hooked
from outlier_core.load.models import LoadedModel
from outlier_core.load.sites import canonical_site, hook_name, pattern_hook
from outlier_core.load.tokens import Encoded, encode
from outlier_core.observe.detect import (
    PAPER_RULE,
    MassiveRule,
    massive_mask,
)


@dataclass(frozen=True)
class TopEntry:
    position: int
    dim: int
    value: Annotated[float, Field(description="signed")]
    token: str


@dataclass(frozen=True)
class LayerSummary:
    layer: int
    median_abs: float
    max_abs: float
    top: tuple[TopEntry, ...]  # by |value|, descending


@dataclass(frozen=True)
class MassiveEntry:
    layer: int
    position: int
    dim: int
    value: Annotated[float, Field(description="signed")]
    token: Annotated[str, Field(exclude=True)]  # the scan lists the tokens once


@dataclass(frozen=True)
class Scan:
    """One prompt, every layer: the rise/plateau/fall curve, massive activations, sinks.

    Its fields are the scan contract of the API and the CLI (`--json`); the caller's own
    choices (site, BOS) and the full key shares are left out of it.
    """

    site: Annotated[str, Field(exclude=True)]
    prepend_bos: Annotated[bool, Field(exclude=True)]
    tokens: tuple[str, ...]
    layers: tuple[LayerSummary, ...]
    massive: tuple[MassiveEntry, ...]
    key_share: Annotated[tuple[tuple[float, ...], ...], Field(exclude=True)]  # (L, T): mean attention queries put on each key
    sink_share: Annotated[tuple[float, ...], Field(description="per layer, the mean attention queries put on position 0")]  # key_share[:, 0]
    head_sink_share: Annotated[tuple[tuple[float, ...], ...], Field(description="(layers, heads): per head, the mean attention on position 0")]


def summarize_layer(h: torch.Tensor, layer: int, top_k: int, rule: MassiveRule, tokens: tuple[str, ...]) -> tuple[LayerSummary, list[MassiveEntry]]:
    """h: (T, D) on the model's device. Only scalars and a few indices reach the CPU."""
    magnitude = h.abs().float()  # (T, D)
    flat = magnitude.flatten()  # (T*D,)
    top_values, top_index = flat.topk(min(top_k, flat.numel()))
    median_abs = float(flat.median())
    positions, dims = torch.nonzero(massive_mask(magnitude, median_abs, rule), as_tuple=True)  # (N,), (N,)
    d_model = h.shape[1]
    top = tuple(
        TopEntry(int(i) // d_model, int(i) % d_model, float(h.flatten()[i]), tokens[int(i) // d_model])
        for i in top_index.tolist()
    )
    massive = [
        MassiveEntry(layer, p, d, float(h[p, d]), tokens[p])
        for p, d in zip(positions.tolist(), dims.tolist())
    ]
    massive.sort(key=lambda m: -abs(m.value))
    summary = LayerSummary(layer, median_abs, float(top_values[0]) if top_k else float(flat.max()), top)
    return summary, massive


def scan_encoded(
    model: LoadedModel,
    encoded: Encoded,
    site: str = "resid_post",
    top_k: int = 3,
    rule: MassiveRule = PAPER_RULE,
    unembed: bool = False,
) -> Scan:
    """`unembed=True` also runs the final norm and unembedding, for callers hooking the logits."""
    if top_k < 1:
        raise InputError("top_k", "must be at least 1")
    site = canonical_site(site)
    summaries: dict[int, LayerSummary] = {}
    massive: list[MassiveEntry] = []
    key_share: dict[int, tuple[float, ...]] = {}
    head_share: dict[int, tuple[float, ...]] = {}

    def activations_hook(layer: int) -> Callable:
        def hook(h: torch.Tensor, *, hook) -> None:  # h: (1, T, D)
            summary, found = summarize_layer(h[0], layer, top_k, rule, encoded.tokens)
            summaries[layer] = summary
            massive.extend(found)

        return hook

    def pattern_hook_fn(layer: int) -> Callable:
        def hook(pattern: torch.Tensor, *, hook) -> None:  # pattern: (1, H, T_query, T_key)
            key_share[layer] = tuple(pattern[0].float().mean(dim=(0, 1)).tolist())  # (T_key,)
            head_share[layer] = tuple(pattern[0, :, :, 0].float().mean(dim=-1).tolist())  # (H,)

        return hook

    hooks: list[Hook] = []
    for layer in range(model.n_layers):
        hooks.append((hook_name(site, layer), activations_hook(layer)))
        hooks.append((pattern_hook(layer), pattern_hook_fn(layer)))
    run_hooked(model, encoded.ids, hooks, stop_at_layer=None if unembed else model.n_layers)
    return Scan(
        site=site,
        prepend_bos=encoded.prepend_bos,
        tokens=encoded.tokens,
        layers=tuple(summaries[l] for l in range(model.n_layers)),
        massive=tuple(sorted(massive, key=lambda m: (m.layer, -abs(m.value)))),
        key_share=tuple(key_share[l] for l in range(model.n_layers)),
        sink_share=tuple(key_share[l][0] for l in range(model.n_layers)),
        head_sink_share=tuple(head_share[l] for l in range(model.n_layers)),
    )


def scan(
    model: LoadedModel,
    text: str,
    prepend_bos: bool = True,
    site: str = "resid_post",
    top_k: int = 3,
    rule: MassiveRule = PAPER_RULE,
    max_tokens: int | None = None,
) -> Scan:
    """Every layer at `site` for one prompt: top-k |x|, median, max, massive entries, sinks."""
    return scan_encoded(model, encode(model, text, prepend_bos, max_tokens), site, top_k, rule)


@dataclass(frozen=True)
class LayerMatrix:
    layer: int
    site: str
    tokens: tuple[str, ...]
    values: torch.Tensor  # (T, D) on the CPU, float32


def layer_matrix(
    model: LoadedModel, text: str, layer: int, site: str = "resid_post", prepend_bos: bool = True, max_tokens: int | None = None
) -> LayerMatrix:
    """The full position × dim matrix of one layer (for the heatmap); stops after that layer."""
    check_layer(model, layer)
    site = canonical_site(site)
    encoded = encode(model, text, prepend_bos, max_tokens)
    captured: dict[str, torch.Tensor] = {}

    def hook(h: torch.Tensor, *, hook) -> None:  # h: (1, T, D)
        captured["h"] = h[0].float().cpu()

    run_hooked(model, encoded.ids, [(hook_name(site, layer), hook)], stop_at_layer=layer + 1)
    return LayerMatrix(layer, site, encoded.tokens, captured["h"])


@dataclass(frozen=True)
class AttentionPatterns:
    layer: int
    tokens: tuple[str, ...]
    pattern: torch.Tensor  # (H, B, B) on the CPU, float32: B = T_query = T_key unless pooled into blocks
    starts: tuple[int, ...]  # (B,) the first position of each block, on both axes: every position when not pooled
    sink_share: torch.Tensor  # (H,) per head, the mean attention the queries put on position 0, before any pooling


def position_blocks(n_positions: int, max_blocks: int) -> tuple[int, ...]:
    """Where the blocks of T positions start, at most `max_blocks` (>= 2) of them: position 0
    (where attention sinks) alone, the others in equal runs; every position when they fit."""
    if n_positions <= max_blocks:
        return tuple(range(n_positions))
    size = math.ceil((n_positions - 1) / (max_blocks - 1))
    return (0, *range(1, n_positions, size))


def pool_pattern(pattern: torch.Tensor, starts: tuple[int, ...]) -> torch.Tensor:
    """pattern: (H, T, T), rows summing to 1. Returns (H, B, B): each cell the mean, over its
    block of queries, of the attention they put on its block of keys (rows still sum to 1)."""
    n_positions = pattern.shape[-1]
    if len(starts) == n_positions:
        return pattern
    bounds = torch.tensor(starts[1:], device=pattern.device)
    block = torch.bucketize(torch.arange(n_positions, device=pattern.device), bounds, right=True)  # (T,)
    member = torch.nn.functional.one_hot(block, len(starts)).to(pattern.dtype)  # (T, B)
    on_keys = pattern @ member  # (H, T, B): attention on each block of keys
    return (member.T @ on_keys) / member.sum(dim=0)[:, None]  # (H, B, B)


def attention_patterns_encoded(
    model: LoadedModel, encoded: Encoded, layer: int, hooks: Sequence[Hook] = (), max_blocks: int | None = None
) -> AttentionPatterns:
    """One layer's patterns on `encoded`, with `hooks` (e.g. interventions) firing on the way.

    `max_blocks`: pool a longer prompt's positions into at most that many blocks per axis
    (`position_blocks`, `pool_pattern`), on the device, so what comes back is bounded.
    """
    check_layer(model, layer)
    n_positions = encoded.ids.shape[1]
    starts = position_blocks(n_positions, max_blocks or n_positions)
    captured: dict[str, torch.Tensor] = {}

    def hook(pattern: torch.Tensor, *, hook) -> None:  # (1, H, T, T)
        found = pattern[0].float()
        captured["sink"] = found[:, :, 0].mean(dim=-1).cpu()  # (H,)
        captured["p"] = pool_pattern(found, starts).cpu()

    run_hooked(model, encoded.ids, [*hooks, (pattern_hook(layer), hook)], stop_at_layer=layer + 1)
    return AttentionPatterns(layer, encoded.tokens, captured["p"], starts, captured["sink"])


def attention_patterns(model: LoadedModel, text: str, layer: int, prepend_bos: bool = True, max_tokens: int | None = None) -> AttentionPatterns:
    """One layer's patterns on `text`."""
    check_layer(model, layer)
    return attention_patterns_encoded(model, encode(model, text, prepend_bos, max_tokens), layer)
