"""bf16, the dtype a GPU runs in, exercised on the CPU: the tiny model loaded in bf16 agrees
with the fp32 one within tolerances that follow from bf16's 8 significant bits.

Why these tolerances: the bf16 model's weights are the fp32 ones rounded to 8 significant
bits (relative error ≤ 2**-9 ≈ 0.2% each), and every matmul output is rounded again, so
after four layers the activations differ by about 1% (measured: at most 0.7% on the
per-layer median and max |x|). Losses average those errors over 69 predictions: measured
within 5e-4 nats, bounded here by 5e-3. A short sparse fine-tune follows the same
trajectory: measured losses within 4e-4 nats at every step, bounded by 2e-2, and learned
values of cosine 0.9999 with fp32's, bounded by 0.95 (bf16 values keep 8 bits: a step much
smaller than a value could be rounded away, which would show here).

Outlier Lab's own reductions over the residual stream (medians, top entries, thresholds,
reference means, sink shares, losses) run in fp32 or fp64 on top of the bf16 values: what
bf16 loses is the model's rounding (a massive activation of 25,000 is stored as 24,960:
bf16's spacing there is 128), not the tool's.
"""

from __future__ import annotations

import pytest
import torch

from outlier_core.intervene.evaluate import evaluate
from outlier_core.intervene.interventions import Intervention, intervened
from outlier_core.load.models import load_model
from outlier_core.observe.capture import scan, summarize_layer
from outlier_core.observe.detect import PAPER_RULE, massive_entries
from outlier_core.select.masks import SelectionMask
from outlier_core.tune import train_data
from outlier_core.tune.sparse import SparseTuner
from outlier_core.tune.training import train

TEXT = "A small boat crossed the bay at dawn, and the gulls followed it home."
ACTIVATION_REL = 2e-2
LOSS_ABS = 5e-3
FINETUNE_LOSS_ABS = 2e-2


@pytest.fixture(scope="module")
def fp32():
    return load_model("tiny-random", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def bf16():
    return load_model("tiny-random", device="cpu", dtype="bfloat16")


def test_bf16_model_is_bf16(bf16):
    assert bf16.dtype == torch.bfloat16
    assert {p.dtype for p in bf16.hf_parameters().values()} == {torch.bfloat16}


def test_scan_agrees_with_fp32(fp32, bf16):
    full, half = scan(fp32, TEXT), scan(bf16, TEXT)
    for a, b in zip(full.layers, half.layers):
        assert b.median_abs == pytest.approx(a.median_abs, rel=ACTIVATION_REL)
        assert b.max_abs == pytest.approx(a.max_abs, rel=ACTIVATION_REL)
        assert (b.top[0].position, b.top[0].dim) == (a.top[0].position, a.top[0].dim)
    assert half.sink_share == pytest.approx(full.sink_share, abs=1e-3)


def test_intervention_agrees_with_fp32(fp32, bf16):
    ivs = [Intervention(1, 0, [3, 7], "mean"), Intervention(2, "all", 5, "scale", 4.0)]
    full, half = evaluate(fp32, TEXT, ivs, seed=1), evaluate(bf16, TEXT, ivs, seed=1)
    assert half.control_interventions == full.control_interventions  # drawn from the same seed
    for arm in ("baseline", "intervened", "control"):
        assert getattr(half, arm).loss == pytest.approx(getattr(full, arm).loss, abs=LOSS_ABS)


def test_massive_activation_is_stored_to_bf16_spacing_and_reduced_in_fp32(fp32, bf16):
    """A planted 25,000: bf16 keeps the nearest of its spacing of 128; the scan finds it either way."""
    planted = [Intervention(1, 0, 5, "set", 25000.0)]
    with intervened(fp32, planted, 70):
        full = scan(fp32, TEXT)
    with intervened(bf16, planted, 70):
        half = scan(bf16, TEXT)
    found = {(m.layer, m.position, m.dim): m.value for m in half.massive}
    assert full.layers[1].top[0].value == 25000.0
    assert found[(1, 0, 5)] == 24960.0  # 25,000 rounded to bf16: 195 × 128
    assert half.layers[1].median_abs == pytest.approx(full.layers[1].median_abs, rel=ACTIVATION_REL)


def test_massive_rule_compares_in_fp32():
    """The threshold 1000 × median must not be rounded to bf16 before comparing: 301.76 would become 302."""
    rule = PAPER_RULE.__class__(abs_threshold=100.0, median_ratio=1000.0)
    h = torch.full((4, 8), 309 / 1024, dtype=torch.bfloat16)  # median 0.3017578125 (exact in bf16): threshold 301.7578125
    h[0, 0] = 302.0  # above the threshold, and equal to its bf16 rounding
    positions, dims, _ = massive_entries(h, rule)
    assert (positions.tolist(), dims.tolist()) == ([0], [0])
    summary, massive = summarize_layer(h, 0, 3, rule, tuple("abcd"))
    assert [(m.position, m.dim) for m in massive] == [(0, 0)] and summary.max_abs == 302.0


def _finetune(model) -> tuple[list[float], torch.Tensor]:
    """Five AdamW steps on a sparse mask: (losses, the learned values as fp32)."""
    mask = SelectionMask.empty(model, "bf16")
    mask = mask.add(model, "model.layers.1.mlp.down_proj.weight", "rows", [5, 9], "test")
    mask = mask.add(model, "model.layers.2.input_layernorm.weight", "entries", [[3], [17]], "test")
    config = train_data.TrainConfig(steps=5, batch_size=2, seq_len=32, lr=1e-2, weight_decay=0.0)
    data = train_data.make_data(model, train_data.load_corpus("code"), config)
    params = list(model.hf_model.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        with SparseTuner(model, mask) as tuner:
            losses, _, _, _ = train(model, tuner, train_data.batches(data, config), config, config.lr, lambda *a: None, lambda: False, tuner.lean_backward)
            learned = torch.cat([values.detach().float().flatten() for values in tuner.parameters()])
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
    return losses, learned


def test_short_finetune_agrees_with_fp32(fp32, bf16):
    (full, full_values), (half, half_values) = _finetune(fp32), _finetune(bf16)
    assert len(half) == len(full) == 5
    assert half == pytest.approx(full, abs=FINETUNE_LOSS_ABS)
    assert half_values.abs().max() > 0  # bf16 values moved: the optimizer steps are not lost to rounding
    assert torch.nn.functional.cosine_similarity(half_values, full_values, dim=0) > 0.95
