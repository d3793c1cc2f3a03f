"""Heatmap reductions on planted outliers: whatever the view, the outliers stay visible."""

from __future__ import annotations

import pytest
import torch

from outlier_core.errors import InputError
from outlier_core.observe.heatmap import (
    block_max,
    columns_for,
    dim_range,
    dim_view,
    top_dims,
)


@pytest.fixture()
def planted() -> torch.Tensor:
    """(T=6, D=40) small noise with three planted outliers."""
    torch.manual_seed(0)
    values = torch.randn(6, 40) * 0.1
    values[0, 7] = -500.0  # a massive activation on the first token
    values[3, 22] = 80.0
    values[5, 39] = -12.0
    return values


def test_top_dims_keeps_the_outlier_dims_in_order_and_pools_the_rest(planted: torch.Tensor) -> None:
    view = top_dims(planted, 3)
    assert view.dims == (7, 22, 39)
    assert torch.equal(view.values, planted[:, [7, 22, 39]])
    others = [d for d in range(40) if d not in (7, 22, 39)]
    assert view.rest_max_abs.tolist() == pytest.approx(planted[:, others].abs().amax(dim=1).tolist())
    assert float(view.rest_max_abs.max()) < 1.0


def test_block_max_keeps_each_blocks_signed_extreme(planted: torch.Tensor) -> None:
    view = block_max(planted, 4)  # blocks of 10 dims
    assert view.block_size == 10 and view.dims == (0, 10, 20, 30)
    assert view.values[0, 0] == -500.0 and view.values[3, 2] == 80.0 and view.values[5, 3] == -12.0
    for t in range(6):
        for b in range(4):
            block = planted[t, 10 * b : 10 * b + 10]
            assert view.values[t, b] == block[block.abs().argmax()]


def test_block_max_pads_an_uneven_last_block_without_inventing_values() -> None:
    values = -torch.arange(1, 8, dtype=torch.float32)[None, :]  # (1, 7), all negative
    view = block_max(values, 3)  # blocks of 3: [0..2], [3..5], [6]
    assert view.dims == (0, 3, 6)
    assert view.values.tolist() == [[-3.0, -6.0, -7.0]]


def test_dim_range_zooms_and_refuses_what_is_not_there(planted: torch.Tensor) -> None:
    view = dim_range(planted, 20, 25, max_dims=100)
    assert view.dims == (20, 21, 22, 23, 24) and torch.equal(view.values, planted[:, 20:25])
    assert float(view.rest_max_abs.max()) == 500.0
    assert dim_range(planted, 30, None, max_dims=4).dims == (30, 31, 32, 33)
    with pytest.raises(InputError) as err:
        dim_range(planted, 40, None, max_dims=4)
    assert err.value.field == "dim_start"
    with pytest.raises(InputError) as err:
        dim_range(planted, 5, 5, max_dims=4)
    assert err.value.field == "dim_stop"


def test_the_cell_budget_shrinks_columns_for_long_prompts() -> None:
    assert columns_for(10, 128, 65_536) == 128
    assert columns_for(1024, 128, 65_536) == 64
    assert columns_for(100_000, 128, 65_536) == 1


def test_dim_view_names_bad_options(planted: torch.Tensor) -> None:
    for kwargs, field in [({"view": "mean", "max_dims": 4}, "view"), ({"view": "top", "max_dims": 0}, "max_dims")]:
        with pytest.raises(InputError) as err:
            dim_view(planted, **kwargs)
        assert err.value.field == field
