"""Sharded training (FSDP2 on gloo, CPU): the hooks add what a merged weight computes and leave
the weights alone; 2 sharded processes train what one unsharded process does."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from outlier_core.errors import InputError
from outlier_core.load.models import LoadedModel
from outlier_core.select.masks import SelectionMask
from outlier_core.tune import train_data
from outlier_core.tune.comparison import compare
from outlier_core.tune.run_config import RunConfig
from outlier_core.tune.run_process import RunProcess, follow
from outlier_core.tune.sharded import LinearDeltas
from outlier_core.tune.train_data import TrainConfig

DOWN = "model.layers.1.mlp.down_proj.weight"
Q = "model.layers.0.self_attn.q_proj.weight"


def logits(model: LoadedModel, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.hf_model(input_ids=ids).logits  # (B, S, V)


def test_the_hooks_add_what_a_merged_weight_computes_and_leave_every_weight_as_it_was(tiny: LoadedModel) -> None:
    mask = SelectionMask.empty(tiny, "m").add(tiny, DOWN, "rows", [3, 5], "click").add(tiny, Q, "columns", [7], "click")
    ids = torch.randint(0, tiny.hf_model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in tiny.hf_model.state_dict().items()}
    base = logits(tiny, ids)
    deltas = LinearDeltas(tiny.hf_model, mask, "cpu")
    values = {name: torch.randn(v.numel(), generator=torch.Generator().manual_seed(1)) * 0.1 for name, v in deltas.values.items()}
    with torch.no_grad():
        for name, v in values.items():
            deltas.values[name].copy_(v)
    try:
        hooked = logits(tiny, ids)
    finally:
        deltas.remove()
    assert all(torch.equal(v, before[k]) for k, v in tiny.hf_model.state_dict().items())  # the hooks wrote no weight
    assert torch.equal(logits(tiny, ids), base)

    weights = dict(tiny.hf_model.named_parameters())
    plain = {name: next(w for n, w in weights.items() if n.replace("._original_component", "") == name) for name in values}
    with torch.no_grad():  # the reference: the same model with base + delta written into its weights
        for name, v in values.items():
            plain[name].view(-1).index_add_(0, mask.coordinates[name], v)
        try:
            merged = logits(tiny, ids)
        finally:
            for name in values:
                plain[name].copy_(before[next(k for k in before if k.replace("._original_component", "") == name)])
    assert not torch.allclose(hooked, base, atol=1e-4)
    torch.testing.assert_close(hooked, merged, rtol=1e-5, atol=1e-5)


def test_a_sharded_run_refuses_what_it_cannot_train(tiny: LoadedModel) -> None:
    norm = SelectionMask.empty(tiny, "n").add(tiny, "model.layers.0.input_layernorm.weight", "entries", [[2]], "click")
    with pytest.raises(InputError) as err:
        LinearDeltas(tiny.hf_model, norm, "cpu")
    assert err.value.field == "shard" and "Linear" in err.value.reason
    for changes in ({"baselines": ("lora",)}, {"shard": "zero3"}, {"eval_tasks": ("outlier_reviews",)}):
        with pytest.raises(InputError) as err:
            RunConfig(model="tiny-random", mask="m.json", **{"shard": "fsdp", **changes})
        assert err.value.field == "shard", changes


def test_two_sharded_processes_train_what_one_unsharded_process_does(tiny: LoadedModel, tmp_path: Path) -> None:
    two, one = tmp_path / "two", tmp_path / "one"
    two.mkdir()
    mask = SelectionMask.empty(tiny, "m").add(tiny, DOWN, "rows", [3, 5], "click")
    mask.save(two / "input_mask.json")
    train = TrainConfig(steps=3, batch_size=4, seq_len=16)
    config = RunConfig(model="tiny-random", mask="input_mask.safetensors", train=train, data="code", device="cpu", processes=2, shard="fsdp")
    final = follow(RunProcess.launch(two, config), lambda status: None)
    assert final.state == "done", final.error
    log = (two / "run.log").read_text()
    for rank in (0, 1):  # each rank holds about half of the weights: the model was sharded
        held, total = map(int, re.search(rf"\[rank {rank}\] .*this rank holds (\d+) of (\d+) weights", log).groups())
        assert 0 < held < total * 0.6

    data = train_data.make_data(tiny, train_data.load_corpus("code"), train)
    reference = compare(tiny, mask, (), data, train, one).runs[0]  # the parametrized mask method, in this process
    ours = json.loads((two / "comparison.json").read_text())["runs"][0]
    assert ours["method"] == "mask" and ours["shard"] == "fsdp" and ours["trainable"] == reference.trainable == mask.count
    assert ours["train_loss"] == pytest.approx(list(reference.train_loss), rel=1e-5)
    for key in ("eval_before", "eval_after"):
        assert ours[key]["loss"] == pytest.approx(getattr(reference, key).loss, rel=1e-5)
        assert ours[key]["tokens"] == getattr(reference, key).n_tokens
    deltas, expected = load_file(two / "mask" / "deltas.safetensors"), load_file(one / "mask" / "deltas.safetensors")
    assert deltas.keys() == expected.keys() == {f"{DOWN}.index", f"{DOWN}.values"}
    assert torch.equal(deltas[f"{DOWN}.index"], mask.coordinates[DOWN])  # nothing outside the mask is trained
    torch.testing.assert_close(deltas[f"{DOWN}.values"], expected[f"{DOWN}.values"], rtol=1e-4, atol=1e-6)
    assert (two / "mask" / "mask.safetensors").is_file() and (two / "result.json").is_file()
