"""mask: the selection mask's own coordinates."""

from __future__ import annotations

from outlier_core.load.models import LoadedModel
from outlier_core.select.masks import SelectionMask
from outlier_core.tune.methods.coordinates import CoordinateMethod
from outlier_core.tune.train_data import TrainConfig


class MaskMethod(CoordinateMethod):
    name = "mask"

    def selection(self, model: LoadedModel, mask: SelectionMask, config: TrainConfig) -> tuple[str, SelectionMask, dict]:
        return mask.name, mask, {"mask_count": mask.count}


METHOD = MaskMethod()
