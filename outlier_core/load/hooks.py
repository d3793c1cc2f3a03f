"""The hook helpers every stage uses: run one forward pass with temporary hooks, check a layer.

A hook is `(name, fn)` with TransformerLens' signature `fn(tensor, *, hook)`; the hooks
live only inside `run_hooked`, whose context removes them on exit, errors included.
"""

from __future__ import annotations

from typing import Callable

import torch

from outlier_core.errors import InputError
from outlier_core.load.models import LoadedModel

Hook = tuple[str, Callable]


def check_layer(model: LoadedModel, layer: int) -> None:
    if not 0 <= layer < model.n_layers:
        raise InputError("layer", f"{layer} is out of range; the model has layers 0..{model.n_layers - 1}")


def _skip_unembed(x: torch.Tensor, *, hook) -> None:
    from transformer_lens.model_bridge.exceptions import StopAtLayerException

    raise StopAtLayerException(x)  # the bridge's own early exit, caught inside its forward


def run_hooked(model: LoadedModel, ids: torch.Tensor, hooks: list[Hook], stop_at_layer: int | None = None) -> None:
    """One forward pass with temporary hooks; the hooks are gone afterwards, even on error.

    `stop_at_layer=k` runs blocks 0..k-1 only; `k = n_layers` runs every block but skips
    the final norm and the unembedding (~10% of a small model's forward), which no
    capture needs.
    """
    if stop_at_layer == model.n_layers:
        hooks, stop_at_layer = [*hooks, ("ln_final.hook_in", _skip_unembed)], None
    with torch.inference_mode(), model.bridge.hooks(fwd_hooks=hooks):
        model.bridge(ids, return_type=None, stop_at_layer=stop_at_layer)
