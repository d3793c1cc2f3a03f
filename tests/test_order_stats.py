"""The bucketed order statistics (two passes, no sort of the tensor) against the one-bucket
path (one sort) and numpy, on distributions chosen to break them: ties, ±0, denormals, a
grid of few values, a constant, one sign, heavy tails, float64 and bfloat16."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from outlier_core.contract import to_json
from outlier_core.observe import order_stats
from outlier_core.observe.tensor_stats import (
    WeightRule,
    tensor_stats,
    weight_outlier_mask,
)


def _tensors() -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    zeros = torch.from_numpy(rng.standard_normal(40000).astype(np.float32)) * 1e-39  # denormals
    zeros[::7], zeros[::11] = 0.0, -0.0
    planted = torch.from_numpy(rng.normal(0, 0.02, (128, 512)).astype(np.float32))
    planted[5, 7], planted[100, 3] = 6.0, -5.0
    return {
        "normal": torch.from_numpy(rng.standard_normal((300, 257)).astype(np.float32)),
        "bimodal": torch.from_numpy(np.concatenate([rng.normal(-1, 0.2, 20000), rng.normal(1.5, 0.3, 13667)]).astype(np.float32)),
        "grid": torch.from_numpy(rng.integers(-8, 8, (200, 300)).astype(np.float32) / 8),
        "constant": torch.full((5000,), 2.5),
        "zeros_and_denormals": zeros,
        "negative": torch.from_numpy(-rng.uniform(1, 2, 30000).astype(np.float32)),
        "planted": planted,
        "offset": torch.from_numpy((1 + 0.01 * rng.standard_normal(50000)).astype(np.float32)),
        "heavy_tail": torch.from_numpy((rng.standard_exponential(60000) ** 3).astype(np.float32)),
        "float64": torch.from_numpy(rng.standard_normal(70000)),
        "bfloat16": torch.from_numpy(rng.standard_normal((256, 300)).astype(np.float32)).bfloat16(),
        "tiny": torch.from_numpy(rng.uniform(0, 1, (5, 3)).astype(np.float32)),
    }


TENSORS = _tensors()
RULES = [WeightRule("sigma", 0.5), WeightRule("mad", 3), WeightRule("mad", 0.1), WeightRule("percentile", 99)]


@pytest.mark.parametrize("name", list(TENSORS))
@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r.kind}{r.k:g}")
def test_buckets_answer_exactly_what_one_sort_does(monkeypatch, name, rule):
    w = TENSORS[name]
    monkeypatch.setattr(order_stats, "SMALL", 1 << 40)  # one bucket: everything gathered and sorted
    sorted_stats, sorted_mask = to_json(tensor_stats(w, rule, bins=37, max_listed=20)), weight_outlier_mask(w, rule)
    monkeypatch.setattr(order_stats, "SMALL", 0)  # buckets of 12+ key bits even for 15 entries
    stats, mask = to_json(tensor_stats(w, rule, bins=37, max_listed=20)), weight_outlier_mask(w, rule)
    assert stats == sorted_stats
    assert torch.equal(mask, sorted_mask) and stats["outliers"]["count"] == int(mask.sum())
    a = w.double().numpy().ravel()
    median = np.median(a)
    assert stats["summary"]["median"] == pytest.approx(median, rel=1e-12, abs=0)
    assert stats["summary"]["mad"] == pytest.approx(np.median(np.abs(a - median)), rel=1e-12, abs=0)
    counts, _ = np.histogram(a, bins=np.array(stats["histogram"]["edges"]))
    assert stats["histogram"]["counts"] == counts.tolist()


def test_large_tensor_gathers_a_few_percent(monkeypatch):
    """The second pass brings back the buckets the answers need, not the tensor."""
    gathered_sizes = []
    original = order_stats.gather

    def spy(*args):
        found = original(*args)
        gathered_sizes.append((found.buckets.n, len(found.values)))
        return found

    import outlier_core.observe.tensor_stats as stats_module

    monkeypatch.setattr(stats_module, "gather", spy)
    w = torch.from_numpy(np.random.default_rng(1).standard_normal((2048, 1024)).astype(np.float32))
    tensor_stats(w)
    n, gathered = gathered_sizes[0]
    assert n == w.numel() and gathered < 0.06 * n
