"""A mask's coordinates worked out by hand: a boolean tensor per parameter, filled slice by
slice from the parts, never through `SelectionMask.coordinates` (the code under test)."""

from __future__ import annotations

import torch

from outlier_core.select.masks import SelectionMask


def dense_reference(mask: SelectionMask) -> dict[str, torch.Tensor]:
    """{parameter: bool tensor of its shape} for every parameter the mask has parts on."""
    dense: dict[str, torch.Tensor] = {}
    for part in mask.parts:
        d = dense.setdefault(part.parameter, torch.zeros(mask.shapes[part.parameter], dtype=torch.bool))
        for i in part.index.tolist():
            if part.kind == "rows":
                d[i, :] = True
            elif part.kind == "columns":
                d[:, i] = True
            else:
                d[tuple(i)] = True
    return dense


def selected_dense(mask: SelectionMask, name: str) -> torch.Tensor:
    """One parameter's bool tensor; all False where the mask has no part on it."""
    return dense_reference(mask).get(name, torch.zeros(mask.shapes[name], dtype=torch.bool))


def selected_flat(mask: SelectionMask) -> dict[str, torch.Tensor]:
    """Row-major flat positions for every parameter of the mask's shapes (empty where unselected)."""
    return {name: torch.nonzero(selected_dense(mask, name).flatten()).flatten() for name in mask.shapes}
