"""The methods registry: names resolve to their objects, and the torch-free name lists agree with them."""

from __future__ import annotations

import pytest

from outlier_core.errors import InputError
from outlier_core.tune.methods import BASELINES, COORDINATE_METHODS, METHODS, get_method
from outlier_core.tune.methods.coordinates import CoordinateMethod


def test_coordinate_methods_are_exactly_the_ones_that_train_coordinates() -> None:
    assert COORDINATE_METHODS == tuple(m for m in METHODS if isinstance(get_method(m), CoordinateMethod))
    assert BASELINES == tuple(m for m in METHODS if m != "mask")


def test_an_unknown_method_names_the_field() -> None:
    with pytest.raises(InputError) as err:
        get_method("dora", field="method")
    assert err.value.field == "method" and "dora" in str(err.value)
