"""OWL's layerwise outlier ratio (Yin et al. 2024, arXiv 2310.05175).

A weight's score is |W_ij| · ||X_j||₂: large weights that meet large inputs. The share of
scores far above their block's mean says how outlier-heavy a layer is; OwLore samples
layers for fine-tuning in proportion to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from outlier_core.errors import InputError
from outlier_core.load.hooks import run_hooked
from outlier_core.load.models import LoadedModel
from outlier_core.load.tokens import encode
from outlier_core.observe.weights import model_parameters

OWL_M = 5.0  # OWL's default: an outlier scores above 5x its layer's mean


@dataclass(frozen=True)
class LayerOutlierRatio:
    layer: int
    ratio: float  # share of the layer's projection weights with A_ij > M × mean(A), in [0, 1]
    count: int
    n_weights: int


@dataclass(frozen=True)
class OutlierDistribution:
    """OWL's layerwise outlier distribution (LOD) on one prompt."""

    m: float
    tokens: tuple[str, ...]
    layers: tuple[LayerOutlierRatio, ...]


def linear_input_hooks(model: LoadedModel) -> dict[str, str]:
    """HF weight name of every Linear the bridge wraps -> the hook name of that Linear's input."""
    names = {id(p): name for name, p in model.hf_parameters().items()}
    hooks = {}
    for module in model.bridge.modules():
        original = getattr(module, "original_component", None)
        if isinstance(original, torch.nn.Linear) and hasattr(module, "hook_in") and id(original.weight) in names:
            hooks[names[id(original.weight)]] = module.hook_in.name
    return hooks


def layer_outlier_ratios(model: LoadedModel, text: str, m: float = OWL_M, prepend_bos: bool = True) -> OutlierDistribution:
    """Per block, the share of projection weights whose score A_ij = |W_ij| · ||X_j||₂ exceeds
    m × the mean score over all of that block's projections (OWL's LOD).

    ||X_j||₂ is the L2 norm of input feature j over the prompt's positions, from one forward pass.
    """
    if not (0 < m < float("inf")):
        raise InputError("m", "must be a finite number > 0")
    encoded = encode(model, text, prepend_bos)
    input_hooks = linear_input_hooks(model)  # GPT-2's Conv1D projections have none and are left out
    matrices = [p for p in model_parameters(model, ("matrix",)) if p.layer is not None and p.name in input_hooks]
    squares: dict[str, torch.Tensor] = {}

    def accumulate(name: str, in_features: int):
        def hook(x: torch.Tensor, *, hook) -> None:  # (1, T, in), or (1, T, heads, d_head) before o_proj
            squares[name] = x.detach().float().reshape(-1, in_features).square().sum(dim=0)  # (in,)

        return hook

    # stop before the unembedding: no projection reads its output
    run_hooked(model, encoded.ids, [(input_hooks[p.name], accumulate(p.name, p.tensor.shape[1])) for p in matrices], stop_at_layer=model.n_layers)
    layers = []
    for layer in range(model.n_layers):
        scores = [
            p.tensor.detach().float().abs().mul_(squares[p.name].sqrt()[None, :])  # (out, in)
            for p in matrices if p.layer == layer
        ]
        if not scores:
            continue
        n_weights = sum(s.numel() for s in scores)
        threshold = m * sum(float(s.sum(dtype=torch.float64)) for s in scores) / n_weights
        count = sum(int((s > threshold).sum()) for s in scores)
        layers.append(LayerOutlierRatio(layer, count / n_weights, count, n_weights))
    return OutlierDistribution(m, encoded.tokens, tuple(layers))
