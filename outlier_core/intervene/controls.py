"""The control arm of an intervention: the same edit on random ordinary coordinates.

A control answers "is it this coordinate, or any coordinate?": each intervention moves to
as many random positions and dims that carry no massive activation, each weight edit to a
random other index that is not a weight outlier, drawn from the caller's generator.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch

from outlier_core.intervene.interventions import Intervention
from outlier_core.intervene.weight_edits import AxisIndex, Target
from outlier_core.load.models import LoadedModel
from outlier_core.load.sites import site_width
from outlier_core.observe.capture import Scan
from outlier_core.observe.tensor_stats import WeightRule, weight_outlier_mask


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


def control_weight_edits(model: LoadedModel, targets: Sequence[Target], generator: torch.Generator) -> tuple[Target, ...]:
    """Each edit moved to a random other index on every indexed axis; a single entry avoids weight outliers."""
    controls = []
    for p, edit in targets:
        outliers = None if "all" in edit.index else weight_outlier_mask(model.parameter_values(edit.parameter, p).detach(), WeightRule())
        for _ in range(100):  # outliers are a small share of entries: a few draws suffice
            index = tuple(_other_index(i, size, generator) for i, size in zip(edit.index, p.shape))
            if outliers is None or not bool(outliers[index]):
                break
        controls.append((p, replace(edit, index=index)))
    return tuple(controls)
