"""The tuning methods a fine-tune compares, by name, in the order a comparison runs them.

Each method is one module exposing `METHOD`, a `base.TuningMethod`. Adding a method is
one new module and one line below. Method modules are imported on first use, so reading
the names (the CLI's choices, the API's schemas) imports no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from outlier_core.errors import InputError

if TYPE_CHECKING:
    from outlier_core.tune.methods.base import TuningMethod

_MODULES = {  # name -> module in this package
    "mask": "mask",
    "random": "random_mask",
    "ln": "layer_norms",
    "ln_top": "layer_norm_top",
    "shira": "shira",
    "lora": "lora",
    "full": "full",
}
METHODS = tuple(_MODULES)
BASELINES = METHODS[1:]  # what a comparison may train beside the mask
COORDINATE_METHODS = ("mask", "random", "ln", "ln_top")  # their runs save a mask and sparse deltas (values + indices)


def get_method(name: str, field: str = "baseline") -> TuningMethod:
    """The method called `name`; InputError naming `field` for any other name."""
    if name not in _MODULES:
        raise InputError(field, f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return importlib.import_module(f"{__name__}.{_MODULES[name]}").METHOD
