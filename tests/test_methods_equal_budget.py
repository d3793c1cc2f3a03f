"""The methods added for equal-budget sweeps: ln_top (the top-n norm entries) and peft SHiRA."""

from __future__ import annotations

import json

import pytest
import torch

from outlier_core.errors import InputError
from outlier_core.select.masks import SelectionMask, base_parameters
from outlier_core.tune import train_data
from outlier_core.tune.comparison import compare
from outlier_core.tune.methods import get_method
from outlier_core.tune.methods.layer_norm_top import top_norm_entries
from outlier_core.tune.methods.lora import lora_plan
from outlier_core.tune.methods.shira import ShiraTuning, outlier_mask_fn, shira_rank_of

DOWN = "model.layers.1.mlp.down_proj.weight"  # (64, 128)
Q = "model.layers.2.self_attn.q_proj.weight"  # (64, 64)
IDS = torch.tensor([[1, 72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100]])


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.hf_model(IDS).logits


def test_ln_top_takes_the_largest_norm_scales_by_hand(tiny):
    saved = {n: p.detach().clone() for n, p in base_parameters(tiny).items() if n.endswith("norm.weight")}
    with torch.no_grad():  # distinct magnitudes, so the ranking is unambiguous
        base_parameters(tiny)["model.layers.2.input_layernorm.weight"][[3, 9]] = torch.tensor([-7.0, 5.0])
        base_parameters(tiny)["model.norm.weight"][11] = 6.0
    try:
        chosen = top_norm_entries(tiny, 3)
        assert chosen.count == 3
        assert {n: chosen.coordinate_tensor(n).flatten().tolist() for n in chosen.counts()} == {
            "model.layers.2.input_layernorm.weight": [3, 9],
            "model.norm.weight": [11],
        }
        weights = {n: p for n, p in base_parameters(tiny).items() if n.endswith("norm.weight")}
        everything = torch.cat([w.abs().flatten() for w in weights.values()])
        picked = torch.cat([weights[n].abs()[top_norm_entries(tiny, 40).coordinate_tensor(n).flatten()] for n in top_norm_entries(tiny, 40).counts()])
        assert torch.equal(picked.sort(descending=True).values, everything.sort(descending=True).values[:40])
        assert top_norm_entries(tiny, 10**9).count == everything.numel()  # never more than the model has
    finally:
        with torch.no_grad():
            for name, weight in saved.items():
                base_parameters(tiny)[name].copy_(weight)


def test_ln_top_and_shira_train_at_the_mask_budget_and_leave_the_model_as_it_was(tiny, tmp_path):
    saved = {n: p.detach().clone() for n, p in base_parameters(tiny).items()}
    mask = SelectionMask.empty(tiny, "m").add(tiny, DOWN, "columns", [5, 6, 7], "click")  # 192 coordinates
    config = train_data.TrainConfig(steps=2, batch_size=2, seq_len=16, lr=1e-2)
    data = train_data.make_data(tiny, train_data.load_corpus("code"), config)
    result = compare(tiny, mask, ("ln_top", "shira", "lora"), data, config, tmp_path)
    runs = {r.method: r for r in result.runs}
    assert runs["ln_top"].trainable == runs["ln_top"].changed == 192
    targets, rank = lora_plan(tiny, mask)
    assert runs["shira"].trainable == runs["lora"].trainable == rank * (64 + 128) == 192  # SHiRA sits at LoRA's count
    assert runs["shira"].details == {"shira_rank": rank, "shira_targets": targets}
    assert 0 < runs["shira"].changed <= runs["shira"].trainable
    assert all(torch.equal(p, saved[n]) for n, p in base_parameters(tiny).items())
    assert not any("shira_" in n for n, _ in tiny.hf_model.named_parameters())
    written = json.loads((tmp_path / "shira" / "run.json").read_text())
    assert written["name"] == f"shira_r{rank}" and written["shira_targets"] == targets


def test_shira_masks_follow_the_seed_and_a_saved_run_loads_back(tiny, tmp_path):
    mask = SelectionMask.empty(tiny, "m").add(tiny, DOWN, "columns", [5], "click")
    config = train_data.TrainConfig(steps=1, seed=3)
    method = get_method("shira")
    first = method.attach(tiny, mask, config).tuning
    try:
        indices = {n: layer.shira_indices["default"].clone() for n, layer in first.layers.items()}
        with torch.no_grad():
            for p in first.parameters():
                p.copy_(torch.randn_like(p))
        tuned = logits(tiny)
        first.save(tmp_path / "deltas.safetensors")
    finally:
        first.detach()
    base = logits(tiny)
    assert not torch.allclose(tuned, base)
    again = method.load(tiny, tmp_path, tmp_path / "deltas.safetensors")
    try:
        assert torch.equal(logits(tiny), tuned)
        assert all(torch.equal(layer.shira_indices["default"].long(), indices[n].long()) for n, layer in again.layers.items())
    finally:
        again.detach()
    assert torch.equal(logits(tiny), base)
    other = method.attach(tiny, mask, train_data.TrainConfig(seed=4)).tuning
    try:
        assert any(not torch.equal(layer.shira_indices["default"], indices[n]) for n, layer in other.layers.items())
    finally:
        other.detach()


def test_our_mask_goes_through_shira_mask_fn_only_when_it_holds_r_times_out_plus_in(tiny):
    down = torch.randperm(64 * 128, generator=torch.Generator().manual_seed(0))[: 2 * (64 + 128)]  # r = 2 on down_proj
    q = torch.randperm(64 * 64, generator=torch.Generator().manual_seed(1))[: 2 * (64 + 64)]  # r = 2 on q_proj
    fitting = SelectionMask.empty(tiny, "fits")
    fitting = fitting.add(tiny, DOWN, "entries", torch.stack(torch.unravel_index(down, (64, 128)), 1), "click")
    fitting = fitting.add(tiny, Q, "entries", torch.stack(torch.unravel_index(q, (64, 64)), 1), "click")
    assert shira_rank_of(fitting) == 2
    mask_fn, rank, targets = outlier_mask_fn(tiny, fitting)
    tuning = ShiraTuning(tiny, targets, rank, mask_fn=mask_fn)
    try:
        for name, layer in tuning.layers.items():
            row, col = layer.shira_indices["default"].long()
            flat = row * layer.in_features + col
            assert torch.equal(flat.sort().values, fitting.coordinates[f"{name}.weight"])
    finally:
        tuning.detach()
    with_norm = fitting.add(tiny, "model.norm.weight", "entries", [[0]], "click")
    columns = SelectionMask.empty(tiny, "cols").add(tiny, DOWN, "columns", [1, 2], "click")  # 128 = not 192·r
    for refused in (with_norm, columns):
        assert shira_rank_of(refused) is None
        with pytest.raises(InputError) as err:
            outlier_mask_fn(tiny, refused)
        assert err.value.field == "mask"
