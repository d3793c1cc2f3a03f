"""Masks from outliers: the weights that read or write an activation dim, and the
researcher's rules (RESEARCH.md, method steps 2-4), trimmed to a parameter budget.

Convention: Hugging Face layout, a Linear weight is W[out_features, in_features] and
y = x Wᵀ. For residual-stream dim d of block `layer`:

- SCALED by entry `[d]` of the block's norm weights (input_layernorm, post_attention_layernorm);
- READ by COLUMN `W[:, d]` of q_proj, k_proj, v_proj (attention) and gate_proj, up_proj (MLP);
- WRITTEN by ROW `W[d, :]` of o_proj and down_proj (so a super weight is down_proj[d, neuron]).

RESEARCH.md uses the transposed (math) layout, where the same slices are the "W_out
columns" writing a dim and the "W_Q/W_K/W_V rows" reading it. Parameter names follow the
Llama family (Llama, Mistral, Qwen, Gemma); other layouts find no projections here.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from typing import Annotated, Any, Sequence

import numpy as np
import torch
from pydantic import Field

from outlier_core.errors import InputError, within
from outlier_core.load.hooks import check_layer, run_hooked
from outlier_core.load.models import LoadedModel
from outlier_core.load.sites import hook_name
from outlier_core.load.token_limits import first_tokens
from outlier_core.load.tokens import Encoded
from outlier_core.observe.detect import (
    RELATIVE_RULE,
    FeatureRule,
    MassiveRule,
    massive_entries,
    outlier_features,
)
from outlier_core.observe.tensor_stats import WeightRule, weight_outlier_mask
from outlier_core.select import RULES
from outlier_core.select.masks import (
    MaskPart,
    SelectionMask,
    base_parameters,
    make_part,
    model_shapes,
)

ATTENTION_READS = ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight")
MLP_READS = ("mlp.gate_proj.weight", "mlp.up_proj.weight")
WRITES = ("self_attn.o_proj.weight", "mlp.down_proj.weight")
DOWN_PROJ = "mlp.down_proj.weight"
ROLES = ("norm", "reads", "writes")


def _layer_prefix(shapes: dict[str, tuple[int, ...]]) -> str:
    """`model.layers.` for Llama-style names (the part before the block index)."""
    for name in shapes:
        found = re.match(r"^(.*\.layers\.)\d+\.", name)
        if found:
            return found.group(1)
    return "model.layers."


def _block_param(shapes: dict, prefix: str, layer: int, suffix: str) -> str | None:
    name = f"{prefix}{layer}.{suffix}"
    return name if name in shapes else None


Shapes = dict[str, tuple[int, ...]]  # plain name -> shape, as `model_shapes` gives them


def norm_parameters(model: LoadedModel, shapes: Shapes | None = None) -> list[tuple[str, int]]:
    """(name, layer) of every norm weight over the residual stream; the final norm gets layer n_layers."""
    shapes = model_shapes(model)[0] if shapes is None else shapes
    prefix = _layer_prefix(shapes)
    found = []
    for name, shape in shapes.items():
        if shape != (model.d_model,) or not name.endswith("norm.weight"):
            continue
        block = re.match(rf"^{re.escape(prefix)}(\d+)\.", name)
        found.append((name, int(block.group(1)) if block else model.n_layers))
    return found


def dim_parts(
    model: LoadedModel, layer: int, dim: int, roles: tuple[str, ...] = ROLES, source: str | None = None, shapes: Shapes | None = None,
    norms: list[tuple[str, int]] | None = None,
) -> list[MaskPart]:
    """The parameters of block `layer` that scale, read or write residual dim `dim` (see module doc).

    `shapes`, `norms`: the model's `model_shapes` and `norm_parameters`, when the caller has them.
    """
    check_layer(model, layer)
    if not 0 <= dim < model.d_model:
        raise InputError("dim", f"{dim} is out of range; the model has dims 0..{model.d_model - 1}")
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise InputError("roles", f"choose from {', '.join(ROLES)}")
    shapes = model_shapes(model)[0] if shapes is None else shapes
    norms = norm_parameters(model, shapes) if norms is None else norms
    prefix = _layer_prefix(shapes)
    source = source or f"dim {dim} at layer {layer}"
    parts = []
    if "norm" in roles:
        parts += [make_part(n, "entries", [[dim]], f"{source}: norm scale", shapes[n]) for n, l in norms if l == layer]
    if "reads" in roles:
        for suffix in ATTENTION_READS + MLP_READS:
            name = _block_param(shapes, prefix, layer, suffix)
            if name:
                parts.append(make_part(name, "columns", [dim], f"{source}: reads it", shapes[name]))
    if "writes" in roles:
        for suffix in WRITES:
            name = _block_param(shapes, prefix, layer, suffix)
            if name:
                parts.append(make_part(name, "rows", [dim], f"{source}: writes it", shapes[name]))
    return parts


def dims_count(model: LoadedModel, dims: Sequence[tuple[int, int]], roles: tuple[str, ...] = ROLES, shapes: Shapes | None = None) -> int:
    """Distinct coordinates the parts around `dims` select together, without building them.

    Distinct dims of one block select disjoint norm entries, columns and rows, so per block
    the count is its number of distinct dims times what one dim selects there. Pairs out of
    range are left for `dim_parts` to refuse.
    """
    shapes = model_shapes(model)[0] if shapes is None else shapes
    by_layer: dict[int, set[int]] = {}
    for layer, dim in dims:
        if 0 <= layer < model.n_layers and 0 <= dim < model.d_model:
            by_layer.setdefault(layer, set()).add(dim)
    per_dim = {layer: sum(p.size(shapes[p.parameter]) for p in dim_parts(model, layer, 0, roles, shapes=shapes)) for layer in by_layer}
    return sum(len(found) * per_dim[layer] for layer, found in by_layer.items())


def extended(
    model: LoadedModel,
    mask: SelectionMask,
    parts: Sequence[tuple[str, str, Any, str]] = (),
    dims: Sequence[tuple[int, int]] = (),
    roles: tuple[str, ...] = ROLES,
    max_count: int | None = None,
) -> SelectionMask:
    """`mask` with clicked parts `(parameter, kind, index, source)` and the parts around each
    `(layer, dim)` added; the mask and every addition are checked against `model` once.

    A refusal names the entry at fault: `parts[i].<field>` or `dims[i].<field>`; or `dims`,
    before any part is built, when the dims alone select more than `max_count` coordinates.
    """
    shapes, total = model_shapes(model)
    mask.validate(model, (shapes, total))
    if max_count is not None and dims:
        n = dims_count(model, dims, roles, shapes)
        if n > max_count:
            raise InputError("dims", f"select {n:,} parameters; this server takes masks of at most {max_count:,}")
    norms = norm_parameters(model, shapes)
    added: list[MaskPart] = []
    for i, (parameter, kind, index, source) in enumerate(parts):
        if parameter not in shapes:
            raise InputError(f"parts[{i}].parameter", f"unknown parameter {parameter!r} for model {model.name}")
        added.append(make_part(parameter, kind, index, source, shapes[parameter], f"parts[{i}]"))
    for i, (layer, dim) in enumerate(dims):
        with within(f"dims[{i}]"):
            added += dim_parts(model, layer, dim, roles, shapes=shapes, norms=norms)
    return mask.with_parts(added, shapes)


@dataclass(frozen=True)
class Evidence:
    """What one forward pass shows, per layer, for the rules: all on the CPU, float32."""

    resid_post: torch.Tensor  # (L, T, D)
    mlp_post: torch.Tensor  # (L, T, d_mlp): the down-projection's input
    ln1: torch.Tensor  # (L, T, D): normalized input of attention
    ln2: torch.Tensor  # (L, T, D): normalized input of the MLP


def capture_evidence(model: LoadedModel, encoded: Encoded) -> Evidence:
    sites = ("resid_post", "mlp_post", "ln1", "ln2")
    captured: dict[tuple[str, int], torch.Tensor] = {}

    def keep(site: str, layer: int):
        def hook(x: torch.Tensor, *, hook) -> None:  # (1, T, width)
            captured[(site, layer)] = x[0].float().cpu()

        return hook

    hooks = [(hook_name(s, l), keep(s, l)) for s in sites for l in range(model.n_layers)]
    run_hooked(model, encoded.ids, hooks, stop_at_layer=model.n_layers)
    stacked = [torch.stack([captured[(s, l)] for l in range(model.n_layers)]) for s in sites]
    return Evidence(*stacked)


def prompt_from_text(model: LoadedModel, text: str, prepend_bos: bool = True, max_tokens: int = 128) -> Encoded:
    """The first `max_tokens` tokens of `text` (BOS included when asked), tokenized as `tokens.encode`
    does; only a prefix of a long text is tokenized."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("text", "must be a non-empty string")
    if max_tokens < 2:
        raise InputError("max_tokens", "must be at least 2")
    limit = min(max_tokens, model.n_ctx)
    ids = ([model.bos_token_id] if prepend_bos else []) + first_tokens(model, text, limit)
    ids = ids[:limit]
    return Encoded(torch.tensor([ids], device=model.device), tuple(model.tokenizer.decode([i]) for i in ids), prepend_bos)


@dataclass(frozen=True)
class RuleConfig:
    rules: tuple[str, ...] = RULES  # priority order: the budget is filled rule by rule
    norm_rule: WeightRule = WeightRule("sigma", 3.0)
    window: int = 0  # layer-window sparsity n: among layers with norm outliers within n of each other keep the largest; 0 keeps all
    massive_rule: MassiveRule = RELATIVE_RULE  # small models need the relative rule to see the early layers
    contribution_share: float = 0.05  # a down_proj entry is picked when |activation × weight| reaches this share of the massive value
    neurons_per_dim: int = 8  # at most this many down_proj entries per massive (layer, position, dim)
    feature_rule: FeatureRule = field(default_factory=FeatureRule)

    def __post_init__(self) -> None:
        unknown = [r for r in self.rules if r not in RULES]
        if unknown or not self.rules or len(set(self.rules)) != len(self.rules):
            raise InputError("rules", f"choose distinct rules from {', '.join(RULES)}")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 0:
            raise InputError("window", "must be a whole number >= 0")
        if not 0 < self.contribution_share <= 1:
            raise InputError("contribution_share", "must be in (0, 1]")
        if self.neurons_per_dim < 1:
            raise InputError("neurons_per_dim", "must be at least 1")


@dataclass(frozen=True)
class Candidate:
    parameter: str
    kind: str
    index: list  # one coordinate ([i] / [i, j]) for entries, one row or column otherwise
    score: float  # ranks candidates inside their rule
    layer: int
    source: str


def super_weight_candidates(model: LoadedModel, evidence: Evidence, config: RuleConfig) -> list[Candidate]:
    """down_proj[d, n] entries whose product with the MLP activation writes a massive dim d.

    Only layers where (position, d) is massive after the block count, and an entry must carry
    `contribution_share` of the value there: that picks the layer that forms the activation
    (and the ones that erase it), not the plateau that merely carries it.
    """
    shapes, _ = model_shapes(model)
    prefix = _layer_prefix(shapes)
    weights = base_parameters(model)
    best: dict[tuple[int, int, int], Candidate] = {}
    for layer in range(model.n_layers):
        name = _block_param(shapes, prefix, layer, DOWN_PROJ)
        if name is None:
            continue
        positions, dims, values = massive_entries(evidence.resid_post[layer], config.massive_rule)  # (N,) each
        if positions.numel() == 0:
            continue
        w_down = weights[name].detach().float().cpu()  # (D, d_mlp)
        for position, dim, value in zip(positions.tolist(), dims.tolist(), values.tolist()):
            contribution = evidence.mlp_post[layer, position] * w_down[dim]  # (d_mlp,)
            share = contribution.abs() / abs(value)  # (d_mlp,)
            top_share, top_neuron = share.topk(min(config.neurons_per_dim, share.numel()))
            source = f"super_weights: write massive dim {dim} at layer {layer}"
            for s, neuron in zip(top_share.tolist(), top_neuron.tolist()):
                key = (layer, dim, neuron)
                if s >= config.contribution_share and (key not in best or best[key].score < s):
                    best[key] = Candidate(name, "entries", [dim, neuron], s, layer, source)
    return list(best.values())


def norm_outlier_candidates(model: LoadedModel, config: RuleConfig) -> list[Candidate]:
    """Outlier entries of the norm weights, ranked by |z| within their tensor; then the layer window."""
    weights = base_parameters(model)
    source = f"norm_outliers: {config.norm_rule.kind} k={config.norm_rule.k:g}"
    if config.window:
        source += f", one layer per window of ±{config.window}"
    found = []
    for name, layer in norm_parameters(model):
        w = weights[name].detach().float().cpu() + model.norm_offset  # (D,): the scale the norm applies
        outliers = torch.nonzero(weight_outlier_mask(w, config.norm_rule)).flatten()
        z = ((w - w.mean()) / w.std(unbiased=False).clamp_min(1e-12)).abs()  # (D,)
        found += [Candidate(name, "entries", [d], float(z[d]), layer, source) for d in outliers.tolist()]
    return window_sparsity(found, config.window)


def window_sparsity(candidates: list[Candidate], window: int) -> list[Candidate]:
    """Within any `window` layers of each other, keep only the layer with the largest outlier.

    Greedy, largest first: a layer is kept unless a kept layer with a larger outlier lies
    within `window` of it (the researcher's (x-n, x+n) rule with n = window).
    """
    if window == 0:
        return candidates
    layer_score: dict[int, float] = {}
    for c in candidates:
        layer_score[c.layer] = max(layer_score.get(c.layer, 0.0), c.score)
    kept: list[int] = []
    for layer in sorted(layer_score, key=lambda l: (-layer_score[l], l)):
        if all(abs(layer - k) > window for k in kept):
            kept.append(layer)
    return [c for c in candidates if c.layer in kept]


def feature_read_candidates(model: LoadedModel, evidence: Evidence, config: RuleConfig, readers: str) -> list[Candidate]:
    """Columns W[:, d] of the projections that read an outlier feature dim d (LLM.int8 rule).

    readers "attention": q/k/v_proj reading the attention input (ln1);
    "ffn": gate/up_proj reading the MLP input (ln2). One candidate per layer where the
    feature reaches the rule's magnitude, ranked by its largest |x| there.
    """
    x, suffixes = (evidence.ln1, ATTENTION_READS) if readers == "attention" else (evidence.ln2, MLP_READS)
    shapes, _ = model_shapes(model)
    prefix = _layer_prefix(shapes)
    found = []
    for feature in outlier_features(x, config.feature_rule):
        peak = x[:, :, feature.dim].abs().amax(dim=1)  # (L,)
        source = f"{readers}_reads: read outlier feature dim {feature.dim}"
        for layer in torch.nonzero(peak >= config.feature_rule.magnitude).flatten().tolist():
            for suffix in suffixes:
                name = _block_param(shapes, prefix, layer, suffix)
                if name:
                    found.append(Candidate(name, "columns", [feature.dim], float(peak[layer]), layer, source))
    return found


@dataclass(frozen=True)
class Suggestion:
    mask: SelectionMask
    found: Annotated[dict[str, int], Field(description="per rule, the coordinates its candidates covered before the budget (repeats counted)")]
    budget: int


def suggest_mask(model: LoadedModel, encoded: Encoded, budget: int, config: RuleConfig = RuleConfig(), name: str = "outlier rules") -> Suggestion:
    """The researcher's method as a mask: rules in priority order, best first, trimmed to `budget`."""
    evidence = capture_evidence(model, encoded)
    by_rule = {
        "super_weights": lambda: super_weight_candidates(model, evidence, config),
        "norm_outliers": lambda: norm_outlier_candidates(model, config),
        "attention_reads": lambda: feature_read_candidates(model, evidence, config, "attention"),
        "ffn_reads": lambda: feature_read_candidates(model, evidence, config, "ffn"),
    }
    shapes, _ = model_shapes(model)
    parts: list[MaskPart] = []
    found = {}
    for rule in config.rules:
        candidates = sorted(by_rule[rule](), key=lambda c: -c.score)
        rule_parts = [make_part(c.parameter, c.kind, [c.index] if c.kind == "entries" else c.index, c.source, shapes[c.parameter]) for c in candidates]
        found[rule] = sum(p.size(shapes[p.parameter]) for p in rule_parts)
        parts += rule_parts
    trimmed = SelectionMask.empty(model, name).with_parts(parts, shapes).trimmed(budget)
    return Suggestion(merge_parts(trimmed), found, budget)


def merge_parts(mask: SelectionMask) -> SelectionMask:
    """One part per (parameter, kind, source), in order of first appearance."""
    groups: dict[tuple[str, str, str], list[torch.Tensor]] = {}
    for part in mask.parts:
        groups.setdefault((part.parameter, part.kind, part.source), []).append(part.index)
    parts = tuple(MaskPart(p, k, torch.cat(chunks), s) for (p, k, s), chunks in groups.items())
    return SelectionMask(mask.name, mask.model, mask.n_model_params, mask.shapes, parts)


def norm_mask(model: LoadedModel, name: str = "ln_only") -> SelectionMask:
    """Every norm weight entry (the LN-only baseline)."""
    shapes, _ = model_shapes(model)
    parts = [
        make_part(n, "entries", torch.arange(shapes[n][0])[:, None], "baseline ln_only: every norm weight", shapes[n])
        for n, shape in shapes.items()
        if len(shape) == 1 and "norm" in n
    ]
    return SelectionMask.empty(model, name).with_parts(parts, shapes)


def random_like(mask: SelectionMask, seed: int, name: str | None = None) -> SelectionMask:
    """A random mask of the same size and shape: per parameter, as many random distinct rows,
    columns and loose entries as `mask` selects there, so every per-parameter count matches."""
    parts: list[MaskPart] = []
    source = f"random (seed {seed}) like {mask.name!r}"
    for parameter in sorted(mask.coordinates):
        shape = mask.shapes[parameter]
        rng = np.random.default_rng([seed, zlib.crc32(parameter.encode())])
        total = int(mask.coordinates[parameter].numel())
        if len(shape) != 2:
            flat = np.sort(rng.choice(int(np.prod(shape)), size=total, replace=False))
            index = torch.stack(torch.unravel_index(torch.from_numpy(flat), shape), dim=1)
            parts.append(make_part(parameter, "entries", index, source, shape))
            continue
        n_rows, n_cols = shape
        rows = _distinct(mask, parameter, "rows")
        cols = _distinct(mask, parameter, "columns")
        new_rows = np.sort(rng.choice(n_rows, size=rows, replace=False))
        new_cols = np.sort(rng.choice(n_cols, size=cols, replace=False))
        loose = total - (rows * n_cols + cols * n_rows - rows * cols)
        free_rows = np.setdiff1d(np.arange(n_rows), new_rows)
        free_cols = np.setdiff1d(np.arange(n_cols), new_cols)
        picks = np.sort(rng.choice(len(free_rows) * len(free_cols), size=loose, replace=False))
        entries = np.stack([free_rows[picks // len(free_cols)], free_cols[picks % len(free_cols)]], axis=1)
        if rows:
            parts.append(make_part(parameter, "rows", torch.from_numpy(new_rows), source, shape))
        if cols:
            parts.append(make_part(parameter, "columns", torch.from_numpy(new_cols), source, shape))
        if loose:
            parts.append(make_part(parameter, "entries", torch.from_numpy(entries), source, shape))
    return SelectionMask(name or f"random like {mask.name}", mask.model, mask.n_model_params, dict(mask.shapes), tuple(parts))


def _distinct(mask: SelectionMask, parameter: str, kind: str) -> int:
    chunks = [p.index for p in mask.parts if p.parameter == parameter and p.kind == kind]
    return int(torch.unique(torch.cat(chunks)).numel()) if chunks else 0
