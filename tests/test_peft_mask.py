"""A mask trained outside the workbench: the `outlier_mask` peft method, the plain `attach_mask`
path, and a workbench run exported as a peft adapter.

References: an independent loop on a plain Hugging Face copy of the tiny model (same seed, no
peft, no parametrization) that takes dense gradients and applies AdamW by hand to the mask's
coordinates only; weights written by hand (`base.view(-1)[index] += values`); and saved copies
of every weight compared bit for bit.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from app.cli.main import main as cli_main
from outlier_core.errors import InputError
from outlier_core.load.models import tiny_random_hf
from outlier_core.select.masks import SelectionMask
from outlier_core.tune.attach import attach_mask
from outlier_core.tune.peft_export import export_run
from outlier_core.tune.peft_mask import OutlierMaskConfig, adapter_key
from outlier_core.tune.sparse import SparseTuner
from tests.hf_reference import sparse_edited
from tests.mask_reference import selected_flat

DOWN = "model.layers.1.mlp.down_proj.weight"  # (64, 128)
Q = "model.layers.2.self_attn.q_proj.weight"  # (64, 64)
NORM = "model.layers.0.post_attention_layernorm.weight"  # (64,)
EMBED = "model.embed_tokens.weight"  # tied with lm_head
IDS = torch.tensor([[1, 72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100, 33, 10]])
LR, WEIGHT_DECAY, STEPS = 1e-2, 0.5, 3


def make_mask(model) -> SelectionMask:
    """Every kind of coordinate: Linear entries, a row and a column, norm entries, tied embedding rows."""
    mask = SelectionMask.empty(model, "test")
    mask = mask.add(model, DOWN, "entries", [[7, 3], [7, 100], [60, 0]], "click")
    mask = mask.add(model, Q, "columns", [5], "click")
    mask = mask.add(model, Q, "rows", [9], "click")
    mask = mask.add(model, NORM, "entries", [[5], [17]], "click")
    return mask.add(model, EMBED, "rows", [72, 3], "click")


def batches() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return [torch.randint(4, 260, (2, 16), generator=generator) for _ in range(STEPS)]


def plain_tiny() -> torch.nn.Module:
    hf, _ = tiny_random_hf()
    return hf


def base_weights() -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in plain_tiny().named_parameters()}


def hand_trained(mask: SelectionMask) -> dict[str, torch.Tensor]:
    """The same training by hand: dense gradients of a plain model whose weights are base + delta,
    AdamW (decoupled decay on the delta, bias-corrected moments) on the selected positions only."""
    hf = plain_tiny()
    params = dict(hf.named_parameters())  # a tied tensor once: its gradient sums both uses
    base = {n: p.detach().clone() for n, p in params.items()}
    positions = selected_flat(mask)
    delta = {n: torch.zeros(len(i)) for n, i in positions.items()}
    first = {n: torch.zeros(len(i)) for n, i in positions.items()}
    second = {n: torch.zeros(len(i)) for n, i in positions.items()}
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step, ids in enumerate(batches(), start=1):
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(base[n])
                if n in positions:
                    p.view(-1)[positions[n]] += delta[n]
        hf.zero_grad()
        hf(input_ids=ids, labels=ids).loss.backward()
        for n, index in positions.items():
            grad = params[n].grad.view(-1)[index]
            delta[n] = delta[n] * (1 - LR * WEIGHT_DECAY)
            first[n] = beta1 * first[n] + (1 - beta1) * grad
            second[n] = beta2 * second[n] + (1 - beta2) * grad * grad
            corrected = first[n] / (1 - beta1**step)
            delta[n] = delta[n] - LR * corrected / ((second[n] / (1 - beta2**step)).sqrt() + eps)
    tuned = {n: w.clone() for n, w in base.items()}
    for n, index in positions.items():
        tuned[n].view(-1)[index] += delta[n]
    return tuned


@pytest.fixture(scope="module")
def reference(tiny) -> tuple[SelectionMask, dict[str, torch.Tensor]]:
    mask = make_mask(tiny)
    return mask, hand_trained(mask)


def train(model: torch.nn.Module) -> None:
    """AdamW over *every* parameter the model lists, frozen ones included: they get no gradient,
    so neither the update nor the weight decay reaches them."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    for ids in batches():
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def assert_trained_like(merged: torch.nn.Module, mask: SelectionMask, expected: dict[str, torch.Tensor]) -> None:
    """Every weight outside the mask bit-identical to the base; inside, what the hand loop computed."""
    base = base_weights()
    weights = dict(merged.named_parameters())
    assert weights.keys() == base.keys()
    positions = selected_flat(mask)
    for name, weight in weights.items():
        moved = (weight.detach() != base[name]).flatten()
        selected = torch.zeros_like(moved)
        if name in positions:
            selected[positions[name]] = True
        assert torch.equal(moved, selected), name  # every selected coordinate moved, nothing else did
        # the changes agree far closer than weight decay alone moves them (1.5e-4 here)
        assert torch.allclose(weight.detach() - base[name], expected[name] - base[name], rtol=1e-3, atol=1e-6), name
    assert merged.lm_head.weight is merged.model.embed_tokens.weight  # still tied


def test_peft_training_changes_exactly_the_mask_like_the_hand_loop(reference):
    mask, expected = reference
    model = get_peft_model(plain_tiny(), OutlierMaskConfig(mask=mask, task_type="CAUSAL_LM"))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(trainable) == len(mask.shapes)
    assert model.get_nb_trainable_parameters()[0] == mask.count
    train(model)
    assert_trained_like(model.merge_and_unload(), mask, expected)


def test_plain_attach_changes_exactly_the_mask_like_the_hand_loop(reference):
    mask, expected = reference
    model = plain_tiny()
    attached = attach_mask(model, mask)
    assert attached.trainable == mask.count
    assert {id(p) for p in model.parameters() if p.requires_grad} == {id(p) for p in attached.parameters()}
    train(model)
    assert attached.merge() is model
    assert all(p.requires_grad for p in model.parameters())  # the flags are put back
    assert not any(".parametrizations." in n for n, _ in model.named_parameters())
    assert_trained_like(model, mask, expected)


def test_plain_attach_detaches_bit_for_bit_and_saves_in_the_run_format(tiny, tmp_path):
    mask = make_mask(tiny)
    model = plain_tiny()
    attached = attach_mask(model, mask)
    train(model)
    path = attached.save(tmp_path / "deltas.safetensors")
    with torch.no_grad():
        tuned_logits = model(IDS).logits
    attached.detach()
    assert all(torch.equal(p, base_weights()[n]) for n, p in model.named_parameters())
    with torch.no_grad():
        assert torch.allclose(sparse_edited(path)(IDS).logits, tuned_logits, atol=1e-6)  # the file holds what was trained
    again = attach_mask(plain_tiny(), mask)
    again.load_values(path)
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), attached.parameters()))


def random_values(model: torch.nn.Module, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (p for p in model.parameters() if p.requires_grad):
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)


def test_save_and_reload_give_the_same_logits_and_merge_is_base_plus_delta(tiny, tmp_path):
    mask = make_mask(tiny)
    _, mask_file = mask.save(tmp_path / "mask.json")
    model = get_peft_model(plain_tiny(), OutlierMaskConfig(mask=str(mask_file), task_type="CAUSAL_LM"))
    random_values(model)
    with torch.no_grad():
        logits = model(input_ids=IDS).logits
    model.save_pretrained(tmp_path / "adapter")
    mask_file.unlink()  # the adapter folder carries everything
    mask_file.with_suffix(".json").unlink()

    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "OUTLIER_MASK"
    assert config["parameters"][DOWN] == {"shape": [64, 128], "count": 3}
    saved = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert set(saved) == {adapter_key(n, t) for n in mask.shapes for t in ("values", "flat_index")}
    assert all(torch.equal(saved[adapter_key(n, "flat_index")], selected_flat(mask)[n]) for n in mask.shapes)

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no missing or unexpected adapter keys
        reloaded = PeftModel.from_pretrained(plain_tiny(), tmp_path / "adapter")
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=IDS).logits, logits)

    merged = reloaded.merge_and_unload()
    expected = base_weights()
    for name in mask.shapes:
        expected[name].view(-1)[saved[adapter_key(name, "flat_index")]] += saved[adapter_key(name, "values")]
    weights = dict(merged.named_parameters())
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[n], expected[n]) for n in expected)
    assert not any(".parametrizations." in n or "outlier_mask" in n for n in merged.state_dict())


def test_disable_unmerge_and_unload_give_the_base_back_exactly(tiny):
    model = get_peft_model(plain_tiny(), OutlierMaskConfig(mask=make_mask(tiny), task_type="CAUSAL_LM"))
    random_values(model)
    with torch.no_grad():
        base_logits = plain_tiny()(IDS).logits
        tuned_logits = model(input_ids=IDS).logits
        with model.disable_adapter():
            assert torch.equal(model(input_ids=IDS).logits, base_logits)
        assert torch.equal(model(input_ids=IDS).logits, tuned_logits)
        model.merge_adapter()  # base + delta written into the weights, the deltas switched off
        assert model.get_model_status().merged_adapters == ["default"]
        assert torch.allclose(model(input_ids=IDS).logits, tuned_logits, atol=1e-6)
        model.unmerge_adapter()
        assert torch.equal(model(input_ids=IDS).logits, tuned_logits)
    unloaded = model.unload()
    base = base_weights()
    assert all(torch.equal(p, base[n]) for n, p in unloaded.named_parameters())
    assert unloaded.lm_head.weight is unloaded.model.embed_tokens.weight


def test_a_mask_for_another_model_or_a_taken_parameter_is_refused(tiny):
    mask = make_mask(tiny)
    other = LlamaForCausalLM(LlamaConfig(vocab_size=260, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1))
    with pytest.raises(InputError) as err:
        get_peft_model(other, OutlierMaskConfig(mask=mask))
    assert err.value.field == "mask.model"
    with pytest.raises(InputError) as err:
        OutlierMaskConfig()
    assert err.value.field == "mask"
    model = get_peft_model(plain_tiny(), OutlierMaskConfig(mask=mask))
    with pytest.raises(InputError, match="already carries a delta"):
        model.add_adapter("again", OutlierMaskConfig(mask=SelectionMask.empty(tiny, "n").add(tiny, NORM, "entries", [[1]], "click")))


def test_a_workbench_run_exports_as_a_peft_adapter(tiny, tmp_path, capsys):
    """A run's deltas file, reloaded through peft, computes what the deltas added by hand compute."""
    mask = make_mask(tiny)
    run = tmp_path / "run"
    (run / "mask").mkdir(parents=True)
    (run / "comparison.json").write_text("{}")
    mask.save(run / "mask" / "mask.json")
    with SparseTuner(tiny, mask) as tuner:
        generator = torch.Generator().manual_seed(2)
        with torch.no_grad():
            for d in tuner.deltas.values():
                d.values.copy_(torch.randn(d.values.shape, generator=generator) * 0.5)
        deltas = tuner.save(run / "mask" / "deltas.safetensors")

    assert cli_main(["export-peft", str(run), "--out", str(tmp_path / "adapter")]) == 0
    assert f"{mask.count:,} coordinates" in capsys.readouterr().out
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model = PeftModel.from_pretrained(plain_tiny(), tmp_path / "adapter")
    reference = sparse_edited(deltas)
    with torch.no_grad():
        assert torch.allclose(model(input_ids=IDS).logits, reference(IDS).logits, atol=1e-6)
    merged = dict(model.merge_and_unload().named_parameters())
    assert all(torch.equal(merged[n], p) for n, p in reference.named_parameters())

    with pytest.raises(InputError) as err:
        export_run(run, "lora", tmp_path / "nothing")
    assert err.value.field == "method"
    with pytest.raises(InputError) as err:
        export_run(tmp_path, "mask", tmp_path / "nothing")
    assert err.value.field == "run"
    assert not (tmp_path / "nothing").exists()
