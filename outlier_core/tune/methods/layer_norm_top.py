"""ln_top: the budget's worth of norm weight entries, largest |scale| first.

The transferability study's LN baseline: instead of every norm entry (`ln`), only the n
entries with the largest magnitude over all the model's norm weights, n = the mask's count
(or every entry when the model has fewer). The magnitude is the scale the norm applies,
w + `norm_offset` (Gemma's norms scale by 1 + w), so it ranks what the model computes with.
"""

from __future__ import annotations

import torch

from outlier_core.load.models import LoadedModel
from outlier_core.select.mask_rules import norm_parameters
from outlier_core.select.masks import SelectionMask, base_parameters, make_part, model_shapes
from outlier_core.tune.methods.coordinates import CoordinateMethod
from outlier_core.tune.train_data import TrainConfig


def top_norm_entries(model: LoadedModel, n: int) -> SelectionMask:
    """The n norm weight entries of largest |w + offset| over every norm of the model (ties: lower index first)."""
    shapes, _ = model_shapes(model)
    weights = base_parameters(model)
    names = [name for name, _ in norm_parameters(model, shapes)]
    scales = torch.cat([(weights[name].detach().float().cpu() + model.norm_offset).abs() for name in names])  # (P·D,)
    n = min(n, scales.numel())
    order = torch.sort(-scales, stable=True).indices[:n]  # (n,) positions in the concatenation
    width = model.d_model
    source = f"baseline ln_top: the {n} largest |norm scale| entries"
    parts = []
    for which, name in enumerate(names):
        picked = order[(order // width) == which] % width  # (k,)
        if picked.numel():
            parts.append(make_part(name, "entries", torch.sort(picked).values[:, None], source, shapes[name]))
    return SelectionMask.empty(model, "ln_top").with_parts(parts, shapes)


class LayerNormTopMethod(CoordinateMethod):
    name = "ln_top"

    def selection(self, model: LoadedModel, mask: SelectionMask, config: TrainConfig) -> tuple[str, SelectionMask, dict]:
        chosen = top_norm_entries(model, mask.count)
        return f"ln_top{chosen.count}", chosen, {"mask_count": chosen.count}


METHOD = LayerNormTopMethod()
