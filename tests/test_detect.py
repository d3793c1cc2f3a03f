"""Detection rules on synthetic tensors with planted outliers: exact counts and boundaries."""

from __future__ import annotations

import pytest
import torch

from outlier_core.errors import InputError
from outlier_core.observe.detect import (
    PAPER_RULE,
    FeatureRule,
    MassiveRule,
    massive_entries,
    outlier_features,
)


def hidden(T: int = 16, D: int = 32, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(T, D) * 0.5  # median |x| ~ 0.34


def test_paper_rule_finds_exactly_the_planted_entries() -> None:
    h = hidden()
    h[0, 7] = 2500.0
    h[3, 7] = -900.0
    h[5, 1] = 450.0
    h[6, 2] = 300.0  # above 100 but below 1000 × median (~0.34): not massive
    positions, dims, values = massive_entries(h, PAPER_RULE)
    assert list(zip(positions.tolist(), dims.tolist())) == [(0, 7), (3, 7), (5, 1)]
    assert values.tolist() == [2500.0, -900.0, 450.0]  # signed, by |value|


def test_both_paper_conditions_are_required() -> None:
    h = torch.ones(8, 8)  # median |x| = 1
    h[0, 0] = 999.0  # above 100 but not above 1000 × median
    assert massive_entries(h, PAPER_RULE)[0].numel() == 0
    small = torch.full((8, 8), 0.01)  # median 0.01
    small[0, 0] = 99.0  # above 1000 × median, not above 100
    assert massive_entries(small, PAPER_RULE)[0].numel() == 0
    assert massive_entries(small, MassiveRule(abs_threshold=0.0, median_ratio=1000.0))[0].numel() == 1


def test_threshold_is_strict_at_the_boundary() -> None:
    h = torch.ones(4, 4)
    h[1, 2] = 1000.0  # exactly 1000 × median: not massive
    h[2, 3] = 1000.5
    positions, dims, _ = massive_entries(h, PAPER_RULE)
    assert list(zip(positions.tolist(), dims.tolist())) == [(2, 3)]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_activations_are_rejected(bad: float) -> None:
    h = hidden()
    h[2, 2] = bad
    with pytest.raises(InputError) as err:
        massive_entries(h)
    assert err.value.field == "activations"


@pytest.mark.parametrize("kwargs,field", [({"abs_threshold": -1.0}, "abs_threshold"), ({"median_ratio": 0.0}, "median_ratio"), ({"median_ratio": float("nan")}, "median_ratio")])
def test_bad_rule_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(InputError) as err:
        MassiveRule(**kwargs)
    assert err.value.field == field


def test_outlier_features_follow_the_int8_rule() -> None:
    L, T, D = 8, 50, 16
    x = torch.zeros(L, T, D)
    x[:2, :3, 4] = 7.0  # 2/8 = 25% of layers, 3/50 = 6% of positions: exactly at both bounds -> kept
    x[:1, :10, 5] = 9.0  # 1/8 of layers: too few
    x[:, :2, 6] = -6.0  # every layer, but 2/50 = 4% of positions: too few
    x[:, :, 9] = 5.99  # below the magnitude everywhere
    found = outlier_features(x, FeatureRule())
    assert [f.dim for f in found] == [4]
    assert found[0].layer_share == pytest.approx(0.25)
    assert found[0].position_share == pytest.approx(0.06)
    assert found[0].max_abs == 7.0
