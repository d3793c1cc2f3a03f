"""Where a model's outliers are: the snapshot a fine-tune takes before and after each method."""

from __future__ import annotations

import torch
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from outlier_core.load.models import LoadedModel
from outlier_core.load.tokens import Encoded
from outlier_core.observe.capture import scan_encoded
from outlier_core.observe.detect import RELATIVE_RULE
from outlier_core.observe.tensor_stats import WeightRule, weight_outlier_mask
from outlier_core.select import mask_rules
from outlier_core.tune.sparse import effective_weights

LISTED_OUTLIERS = 32  # massive entries and norm outliers listed per scan


class SnapshotMassive(TypedDict):
    layer: int
    position: int
    dim: int
    value: float


class NormOutlier(TypedDict):
    parameter: str
    index: int
    value: float  # the effective weight (norm offset added)
    z: float  # its z-score within the weight vector


class OutlierSnapshot(TypedDict):
    max_abs: list[float]  # per layer, max |resid_post|
    massive: list[SnapshotMassive]  # the largest first
    sink_share: list[float]  # per layer, mean attention on position 0
    norm_outliers: list[NormOutlier]  # the largest |z| first


def block_encoded(model: LoadedModel, block: torch.Tensor) -> Encoded:
    """One packed block (S,) as an `Encoded` prompt for a scan."""
    ids = block.tolist()
    return Encoded(torch.tensor([ids], device=model.device), tuple(model.tokenizer.decode([i]) for i in ids), True)


def outlier_snapshot(model: LoadedModel, encoded: Encoded) -> OutlierSnapshot:
    """Where the outliers are now: per-layer max |resid_post|, the largest massive entries,
    the attention sink, and the largest norm-weight outliers (effective weights)."""
    found = scan_encoded(model, encoded, "resid_post", top_k=1, rule=RELATIVE_RULE)
    massive = sorted(found.massive, key=lambda m: -abs(m.value))[:LISTED_OUTLIERS]
    return {
        "max_abs": [s.max_abs for s in found.layers],
        "massive": [{"layer": m.layer, "position": m.position, "dim": m.dim, "value": m.value} for m in massive],
        "sink_share": list(found.sink_share),
        "norm_outliers": _norm_outliers(model)[:LISTED_OUTLIERS],
    }


def _norm_outliers(model: LoadedModel) -> list[NormOutlier]:
    norms = [n for n, _ in mask_rules.norm_parameters(model)]
    found: list[NormOutlier] = []
    for name, w in effective_weights(model, norms).items():
        w = w.float().cpu() + model.norm_offset  # (D,)
        z = (w - w.mean()) / w.std(unbiased=False).clamp_min(1e-12)  # (D,)
        for d in torch.nonzero(weight_outlier_mask(w, WeightRule())).flatten().tolist():
            found.append({"parameter": name, "index": d, "value": float(w[d]), "z": float(z[d])})
    return sorted(found, key=lambda o: -abs(o["z"]))
