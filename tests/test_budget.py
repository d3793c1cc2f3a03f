"""A fine-tune's memory estimate (`outlier_core.tune.budget`), worked out by hand on the tiny model."""

from __future__ import annotations

import pytest
import torch

from outlier_core.errors import InputError
from outlier_core.intervene.corpus import bundled
from outlier_core.load.models import LoadedModel
from outlier_core.select.mask_rules import norm_mask
from outlier_core.select.masks import SelectionMask
from outlier_core.tune.budget import (
    FP32,
    OPTIMIZER_BYTES,
    RunMemory,
    available_memory,
    check_fits,
    check_text,
    finetune_memory,
    run_memory,
    trained_parameters,
)
from outlier_core.tune.methods import get_method
from outlier_core.tune.train_data import TrainConfig, make_data


def test_one_run_is_weights_trained_state_and_the_batch_kept_for_backward(tiny: LoadedModel) -> None:
    n_params = sum(p.numel() for p in tiny.hf_model.parameters())
    batch, seq = 2, 16
    inner = 8 * tiny.d_model + 4 * tiny.d_mlp + 2 * tiny.n_heads * seq
    logits = batch * seq * tiny.d_vocab * FP32 * 3
    plain = run_memory(tiny, "lora", 1000, batch, seq, checkpoint=False)
    assert plain == RunMemory("lora", n_params * 4, 1000 * OPTIMIZER_BYTES, batch * seq * tiny.n_layers * inner * 4 + logits)
    recomputed = run_memory(tiny, "mask", 1000, batch, seq, checkpoint=True, processes=2)
    assert recomputed.activations == batch * seq * (tiny.n_layers * tiny.d_model + inner) * 4 + logits
    assert (recomputed.weights, recomputed.optimizer) == (2 * n_params * 4, 2 * 1000 * OPTIMIZER_BYTES)


def test_methods_train_what_they_choose(tiny: LoadedModel) -> None:
    mask = norm_mask(tiny)
    config = TrainConfig(lora_rank=8)
    assert trained_parameters(tiny, mask, "mask", config) == trained_parameters(tiny, mask, "random", config) == mask.count
    assert trained_parameters(tiny, mask, "full", config) == sum(p.numel() for p in tiny.hf_model.parameters())
    q_and_v = tiny.n_layers * ((64 + 64) + (64 + 32))  # the mask touches no projection: peft's q/v, (in + out) each
    assert trained_parameters(tiny, mask, "lora", config) == 8 * q_and_v


def test_ln_top_is_estimated_as_the_norm_entries_it_trains(tiny: LoadedModel) -> None:
    down = "model.layers.1.mlp.down_proj.weight"
    norms = (2 * tiny.n_layers + 1) * tiny.d_model  # each layer's two norms and the final one, d_model entries each
    one_row = SelectionMask.empty(tiny, "one row").add(tiny, down, "rows", [3], "test")
    ten_rows = SelectionMask.empty(tiny, "ten rows").add(tiny, down, "rows", list(range(10)), "test")
    assert one_row.count == tiny.d_mlp < norms < ten_rows.count
    config = TrainConfig(batch_size=2, seq_len=16)
    assert trained_parameters(tiny, one_row, "ln_top", config) == tiny.d_mlp  # the mask's count of norm entries
    assert trained_parameters(tiny, ten_rows, "ln_top", config) == norms  # every norm entry, the model has no more
    for mask in (one_row, ten_rows):  # what the method holds in its optimizer once attached
        attached = get_method("ln_top").attach(tiny, mask, config)
        try:
            assert sum(p.numel() for p in attached.tuning.parameters()) == trained_parameters(tiny, mask, "ln_top", config)
        finally:
            attached.tuning.detach()
    data = make_data(tiny, bundled("prose"), config)
    [estimate] = finetune_memory(tiny, one_row, ["ln_top"], config, data)
    assert estimate == run_memory(tiny, "ln_top", tiny.d_mlp, 2, 16, checkpoint=True)  # a coordinate method: recomputed by default
    assert estimate.optimizer == tiny.d_mlp * OPTIMIZER_BYTES


def test_a_batch_is_never_larger_than_the_training_blocks(tiny: LoadedModel) -> None:
    config = TrainConfig(batch_size=1024, seq_len=64)
    data = make_data(tiny, bundled("prose"), config)
    [estimate] = finetune_memory(tiny, norm_mask(tiny), ["mask"], config, data)
    assert estimate == run_memory(tiny, "mask", norm_mask(tiny).count, int(data.train.shape[0]), 64, checkpoint=True)


def test_a_run_past_the_share_is_refused_naming_what_drives_it() -> None:
    check_fits([RunMemory("mask", 10, 10, 10)], available=100, share=0.5)
    with pytest.raises(InputError) as activations:
        check_fits([RunMemory("mask", 10, 10, 10), RunMemory("lora", 1, 1, 2**31)], available=2**30, share=0.8)
    assert activations.value.field == "batch_size" and "lora run" in activations.value.reason
    with pytest.raises(InputError) as rank:
        check_fits([RunMemory("lora", 1, 2**31, 1)], available=2**30, share=0.8)
    assert rank.value.field == "lora_rank"


def test_training_text_is_capped_in_tokens(tiny: LoadedModel) -> None:
    text = bundled("prose").text
    n = len(tiny.tokenizer(text, add_special_tokens=False).input_ids)
    check_text(tiny, text, n, "data_text")
    with pytest.raises(InputError) as refused:
        check_text(tiny, text, n - 1, "data_text")
    assert refused.value.field == "data_text"


def test_free_memory_is_read_from_the_system() -> None:
    assert 0 < available_memory("cpu") < 2**50
    if torch.cuda.is_available():
        assert available_memory("cuda") > 0
