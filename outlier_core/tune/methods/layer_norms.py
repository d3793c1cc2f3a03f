"""ln: every norm weight entry of the model (`mask_rules.norm_mask`), whatever the mask holds."""

from __future__ import annotations

from outlier_core.load.models import LoadedModel
from outlier_core.select import mask_rules
from outlier_core.select.masks import SelectionMask
from outlier_core.tune.methods.coordinates import CoordinateMethod
from outlier_core.tune.train_data import TrainConfig


class LayerNormMethod(CoordinateMethod):
    name = "ln"

    def selection(self, model: LoadedModel, mask: SelectionMask, config: TrainConfig) -> tuple[str, SelectionMask, dict]:
        return "ln_only", mask_rules.norm_mask(model), {}


METHOD = LayerNormMethod()
