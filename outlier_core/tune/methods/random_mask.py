"""random: as many random coordinates as the mask, in the same parameters (`mask_rules.random_like`)."""

from __future__ import annotations

from outlier_core.load.models import LoadedModel
from outlier_core.select import mask_rules
from outlier_core.select.masks import SelectionMask
from outlier_core.tune.methods.coordinates import CoordinateMethod
from outlier_core.tune.train_data import TrainConfig


class RandomMethod(CoordinateMethod):
    name = "random"

    def selection(self, model: LoadedModel, mask: SelectionMask, config: TrainConfig) -> tuple[str, SelectionMask, dict]:
        random_mask = mask_rules.random_like(mask, config.seed)
        return "random", random_mask, {"mask_count": random_mask.count}


METHOD = RandomMethod()
