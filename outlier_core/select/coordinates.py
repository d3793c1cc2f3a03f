"""A parameter's selected coordinates, counted without listing them.

Parts may repeat and overlap; collapsed, a 2-D parameter's selection is whole rows, whole
columns and the loose entries outside both (three disjoint sets), so its count is a few
multiplications and its listing happens only when someone asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from outlier_core.select.masks import MaskPart


def row_major_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


@dataclass(frozen=True, eq=False)
class Collapsed:
    """One parameter's parts without repeats. 2-D: whole rows, whole columns, and the loose
    entries outside both; otherwise only entries. All sorted, all distinct."""

    rows: torch.Tensor  # (R,) int64
    columns: torch.Tensor  # (C,) int64
    entries: torch.Tensor  # (E,) int64 flat positions

    def count(self, shape: tuple[int, ...]) -> int:
        if len(shape) != 2:
            return int(self.entries.numel())
        n_rows, n_cols = shape
        n_r, n_c = int(self.rows.numel()), int(self.columns.numel())
        return n_r * n_cols + (n_rows - n_r) * n_c + int(self.entries.numel())

    def positions(self, shape: tuple[int, ...]) -> torch.Tensor:
        """(count,) sorted flat positions; the three sets are disjoint, so nothing is listed twice."""
        if len(shape) != 2:
            return self.entries
        n_rows, n_cols = shape
        whole_rows = (self.rows[:, None] * n_cols + torch.arange(n_cols)).flatten()  # (R * n_cols,)
        other = torch.ones(n_rows, dtype=torch.bool)
        other[self.rows] = False
        other_rows = torch.nonzero(other).flatten() if self.columns.numel() else other.new_zeros(0, dtype=torch.int64)
        in_columns = (other_rows[:, None] * n_cols + self.columns[None, :]).flatten()  # ((n_rows - R) * C,)
        return torch.sort(torch.cat([whole_rows, in_columns, self.entries])).values


def collapse(parts: list[MaskPart], shape: tuple[int, ...]) -> Collapsed:
    """Cost: the parts' index lengths (their sort), never the size of what they select."""
    empty = torch.zeros(0, dtype=torch.int64)

    def distinct(kind: str) -> torch.Tensor:
        chunks = [p.index.reshape(-1) for p in parts if p.kind == kind]
        return torch.unique(torch.cat(chunks)) if chunks else empty

    listed = [p.index for p in parts if p.kind == "entries"]
    strides = torch.tensor(row_major_strides(shape), dtype=torch.int64)  # (ndim,)
    entries = torch.unique((torch.cat(listed) * strides).sum(dim=1)) if listed else empty  # (E,)
    if len(shape) != 2:
        return Collapsed(empty, empty, entries)
    rows, columns = distinct("rows"), distinct("columns")
    n_cols = shape[1]
    loose = ~torch.isin(entries // n_cols, rows) & ~torch.isin(entries % n_cols, columns)
    return Collapsed(rows, columns, entries[loose])
