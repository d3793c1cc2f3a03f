"""The sparse parametrization: hooks fire, gradients are the masked dense gradients, only the
selected coordinates move, the optimizer holds state for them alone, and the base comes back.

References: a plain Hugging Face copy of the tiny model (`tiny_random_hf`, same seed, no
bridge) with weights edited by hand, central finite differences in float64, and saved
copies of every weight compared bit for bit.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import pytest
import torch

from outlier_core.errors import InputError
from outlier_core.intervene.loss import lm_loss
from outlier_core.load.models import load_model, tiny_random_hf
from outlier_core.select.masks import SelectionMask, base_parameters
from outlier_core.tune import train_data
from outlier_core.tune.checkpointing import block_checkpointing, checkpointable_blocks
from outlier_core.tune.comparison import compare
from outlier_core.tune.methods.full import FullTuning
from outlier_core.tune.sparse import SparseTuner, apply_deltas, parameter_slots
from outlier_core.tune.training import train
from tests.mask_reference import selected_dense

DOWN = "model.layers.1.mlp.down_proj.weight"  # (64, 128)
Q = "model.layers.2.self_attn.q_proj.weight"  # (64, 64)
NORM = "model.layers.0.post_attention_layernorm.weight"  # (64,)
EMBED = "model.embed_tokens.weight"  # tied with lm_head
IDS = torch.tensor([[1, 72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100, 33, 10]])  # BOS + "Hello world!\n" bytes-ish


def make_mask(model) -> SelectionMask:
    mask = SelectionMask.empty(model, "test")
    mask = mask.add(model, DOWN, "entries", [[7, 3], [7, 100], [60, 0]], "click")
    mask = mask.add(model, Q, "columns", [5], "click")
    mask = mask.add(model, Q, "rows", [9], "click")
    return mask.add(model, NORM, "entries", [[5], [17]], "click")


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in base_parameters(model).items()}


def assert_restored(model, saved: dict[str, torch.Tensor]) -> None:
    params = dict(model.hf_model.named_parameters())
    assert not any(".parametrizations." in n or "lora_" in n for n in params)
    current = base_parameters(model)
    assert current.keys() == saved.keys()
    assert all(torch.equal(current[n], saved[n]) for n in saved)


@contextmanager
def frozen_base(model) -> Iterator[None]:
    """Base weights take no gradient inside the block; their flags are put back after it."""
    params = list(model.hf_model.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def set_values(tuner: SparseTuner, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for d in tuner.deltas.values():
            d.values.copy_(torch.randn(d.values.shape, generator=generator) * 0.5)


def reference_hf(tuner: SparseTuner):
    """A plain HF tiny model with base + delta written into its weights by hand."""
    hf, _ = tiny_random_hf()
    hf.eval()
    params = dict(hf.named_parameters())
    with torch.no_grad():
        for name, d in tuner.deltas.items():
            params[name].view(-1)[d.flat_index] += d.values
    return hf


def test_the_tiny_reference_has_the_same_weights(tiny):
    hf, _ = tiny_random_hf()
    plain = dict(hf.named_parameters())
    assert all(torch.equal(plain[n], p) for n, p in base_parameters(tiny).items())


def test_hooks_fire_and_see_the_tuned_weights(tiny):
    saved = snapshot(tiny)
    with SparseTuner(tiny, make_mask(tiny)) as tuner:
        set_values(tuner)
        captured = {}

        def keep(label: str):
            def hook(x, *, hook):
                captured[label] = x.detach().clone()

            return hook

        hooks = [("blocks.1.hook_resid_post", keep("resid_post")), ("blocks.1.mlp.hook_post", keep("mlp_post")), ("blocks.2.attn.hook_pattern", keep("pattern"))]
        with torch.no_grad(), tiny.bridge.hooks(fwd_hooks=hooks):
            logits = tiny.bridge(IDS, return_type="logits")
        assert set(captured) == {"resid_post", "mlp_post", "pattern"}
        with torch.no_grad():
            ref = reference_hf(tuner)(IDS, output_hidden_states=True)
        assert torch.allclose(captured["resid_post"], ref.hidden_states[2], atol=1e-5)
        assert torch.allclose(logits, ref.logits, atol=1e-5)
        tuner.set_enabled(False)
        with torch.no_grad():
            off = tiny.bridge(IDS, return_type="logits")
            base = tiny_random_hf()[0].eval()(IDS).logits
        assert torch.allclose(off, base, atol=1e-6)
        assert not torch.allclose(off, logits, atol=1e-3)
    assert_restored(tiny, saved)


def test_tied_embedding_rows_reach_the_lm_head(tiny):
    mask = SelectionMask.empty(tiny, "embed").add(tiny, EMBED, "rows", [72, 1], "click")
    with SparseTuner(tiny, mask) as tuner:
        set_values(tuner)
        assert len(parameter_slots(tiny)[EMBED]) == 2  # embed_tokens and lm_head hold it
        with torch.no_grad():
            logits = tiny.bridge(IDS, return_type="logits")
            ref = reference_hf(tuner)(IDS).logits  # editing the tied tensor edits both
        assert torch.allclose(logits, ref, atol=1e-5)


def test_gradient_equals_the_masked_dense_gradient(tiny):
    mask = make_mask(tiny)
    with SparseTuner(tiny, mask) as tuner:
        set_values(tuner)
        with frozen_base(tiny):
            for values in tuner.parameters():
                values.requires_grad_(True)
            lm_loss(tiny, IDS).backward()
            hf = reference_hf(tuner)
            finetune_loss = torch.nn.functional.cross_entropy(hf(IDS).logits[0, :-1], IDS[0, 1:])
            finetune_loss.backward()
            dense = dict(hf.named_parameters())
            for name, d in tuner.deltas.items():
                expected = dense[name].grad[selected_dense(mask, name)]  # row-major, as the flat indices
                assert d.flat_index.numel() == expected.numel()
                assert torch.allclose(d.values.grad, expected, rtol=1e-4, atol=1e-7)


@pytest.fixture(scope="module")
def tiny64():
    """A private tiny model in float64, for finite differences."""
    model = load_model("tiny-random", device="cpu")
    model.bridge.to(torch.float64)
    return model


def test_gradient_matches_finite_differences(tiny64):
    mask = make_mask(tiny64)
    with SparseTuner(tiny64, mask) as tuner:
        set_values(tuner)
        for p in tiny64.hf_model.parameters():
            p.requires_grad_(False)
        for values in tuner.parameters():
            values.requires_grad_(True)
        assert all(d.values.dtype == torch.float64 for d in tuner.deltas.values())
        loss = lm_loss(tiny64, IDS)
        loss.backward()
        eps = 1e-2  # HF's RMSNorm normalizes in float32 even in a float64 model: smaller steps drown in its rounding
        for name in (DOWN, Q, NORM):
            values = tuner.deltas[name].values
            for i in (0, values.numel() - 1):
                with torch.no_grad():
                    values[i] += eps
                    up = float(lm_loss(tiny64, IDS))
                    values[i] -= 2 * eps
                    down = float(lm_loss(tiny64, IDS))
                    values[i] += eps
                numeric = (up - down) / (2 * eps)
                assert values.grad[i].item() == pytest.approx(numeric, rel=1e-2, abs=1e-6)


def test_training_moves_exactly_the_selected_coordinates(tiny):
    """High AdamW weight decay, several steps: every other weight stays bit-identical."""
    mask = make_mask(tiny)
    saved = snapshot(tiny)
    config = train_data.TrainConfig(steps=4, batch_size=2, seq_len=16, lr=1e-2, weight_decay=0.5)
    data = train_data.make_data(tiny, train_data.load_corpus("code"), config)
    with SparseTuner(tiny, mask) as tuner:
        with frozen_base(tiny):
            losses, state_bytes, _, _ = train(tiny, tuner, train_data.batches(data, config), config, config.lr, lambda *a: None, lambda: False, tuner.lean_backward)
        assert len(losses) == 4
        # optimizer state: exp_avg and exp_avg_sq (float32) per value, and one step counter per tensor
        assert state_bytes == sum(8 * d.values.numel() + 4 for d in tuner.deltas.values())
        changed_total = 0
        for name, weight in saved.items():
            effective = getattr(parameter_slots(tiny)[name][0].module, parameter_slots(tiny)[name][0].attr).detach()
            if name in mask.shapes:
                moved = effective != weight
                assert torch.equal(moved, selected_dense(mask, name))
                changed_total += int(moved.sum())
            else:
                assert torch.equal(effective, weight)
        assert changed_total == mask.count == tuner.changed() == tuner.trainable
        assert all(torch.equal(tuner.base(n), saved[n]) for n in mask.shapes)  # the base itself is untouched
    assert_restored(tiny, saved)


def test_dense_masked_gradient_is_not_enough():
    """The trap the parametrization avoids: AdamW decay moves coordinates whose gradient is masked."""
    w = torch.nn.Parameter(torch.ones(4, 4))
    optimizer = torch.optim.AdamW([w], lr=0.1, weight_decay=0.5)
    w.grad = torch.zeros(4, 4)
    w.grad[0, 0] = 1.0
    optimizer.step()
    assert int((w.detach() != 1.0).sum()) == 16


def test_saved_deltas_reapply_and_merge(tmp_path):
    model = load_model("tiny-random", device="cpu")
    saved = snapshot(model)
    mask = make_mask(model)
    with SparseTuner(model, mask) as tuner:
        set_values(tuner)
        tuner.save(tmp_path / "deltas.safetensors")
        with torch.no_grad():
            expected_logits = model.bridge(IDS, return_type="logits")
            expected = {n: tuner.tuned(n).clone() for n in mask.shapes}
    assert_restored(model, saved)
    reapplied = apply_deltas(model, mask, tmp_path / "deltas.safetensors")
    with torch.no_grad():
        assert torch.equal(model.bridge(IDS, return_type="logits"), expected_logits)
    reapplied.merge()
    merged = base_parameters(model)
    assert not any(".parametrizations." in n for n, _ in model.hf_model.named_parameters())
    for name, weight in saved.items():
        assert torch.equal(merged[name], expected[name] if name in expected else weight)


def test_a_second_tuner_on_the_same_parameter_is_refused(tiny):
    mask = make_mask(tiny)
    with SparseTuner(tiny, mask):
        from outlier_core.errors import InputError

        with pytest.raises(InputError) as err:
            SparseTuner(tiny, mask)
        assert err.value.field == "mask"
    assert not any(".parametrizations." in n for n, _ in tiny.hf_model.named_parameters())


def test_lean_backward_gives_the_same_gradients_and_holds_no_copy(tiny, monkeypatch):
    """Rebuilding base + delta in the backward pass changes nothing but the memory held."""
    mask = make_mask(tiny)
    kept: list[torch.Tensor] = []  # what autograd ends up holding

    def keep(t):
        kept.append(t)
        return t

    real_hooks = torch.autograd.graph.saved_tensors_hooks

    class CountingHooks(real_hooks):  # wraps lean_backward's own pack to see what it keeps
        def __init__(self, pack, unpack):
            super().__init__(lambda t: (lambda packed: packed if isinstance(packed, tuple) else keep(packed))(pack(t)), unpack)

    def saved_bytes() -> int:
        return sum(t.numel() * t.element_size() for t in kept)

    with SparseTuner(tiny, mask) as tuner:
        set_values(tuner)
        with frozen_base(tiny):
            for values in tuner.parameters():
                values.requires_grad_(True)
            with real_hooks(keep, lambda t: t):
                lm_loss(tiny, IDS).backward()
            plain, plain_bytes = [v.grad.clone() for v in tuner.parameters()], saved_bytes()
            kept.clear()
            for values in tuner.parameters():
                values.grad = None
            monkeypatch.setattr(torch.autograd.graph, "saved_tensors_hooks", CountingHooks)
            with tuner.lean_backward():
                lm_loss(tiny, IDS).backward()
        assert all(torch.equal(a, v.grad) for a, v in zip(plain, tuner.parameters()))
        assert plain_bytes - saved_bytes() == 4 * (64 * 64 + 64 * 128)  # the q_proj and down_proj copies
        assert all(d.made is None for d in tuner.deltas.values())


def test_block_checkpointing_gives_the_same_gradients_and_keeps_only_block_inputs(tiny):
    """Recomputing the blocks in the backward pass changes the memory held, not the gradients;
    every switch it flips is put back."""
    mask = make_mask(tiny)
    blocks = checkpointable_blocks(tiny)
    assert len(blocks) == tiny.n_layers
    kept: list[torch.Tensor] = []

    def keep(t):
        kept.append(t)
        return t

    def gradients(checkpointing: bool) -> tuple[list[torch.Tensor], int]:
        kept.clear()
        for values in tuner.parameters():
            values.grad = None
        with block_checkpointing(tiny, checkpointing), tuner.lean_backward():
            with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):  # innermost: sees what stays outside a checkpoint
                loss = lm_loss(tiny, IDS)
            loss.backward()
        return [v.grad.clone() for v in tuner.parameters()], sum(t.numel() * t.element_size() for t in kept)

    with SparseTuner(tiny, mask) as tuner, frozen_base(tiny):
        set_values(tuner)
        for values in tuner.parameters():
            values.requires_grad_(True)
        plain, plain_bytes = gradients(False)
        recomputed, checkpointed_bytes = gradients(True)
    assert all(torch.allclose(a, b, rtol=1e-6, atol=1e-7) for a, b in zip(plain, recomputed))
    assert checkpointed_bytes < plain_bytes / 2
    assert not any(b.training or b.gradient_checkpointing or "_gradient_checkpointing_func" in b.__dict__ for b in blocks)
    embed = tiny.hf_model.get_input_embeddings()
    assert not embed._forward_hooks  # nothing makes the embeddings require grad (it would drag LoRA's backward to layer 0)


def test_a_run_checkpoints_the_coordinate_tunings_by_default(tiny, tmp_path):
    mask = SelectionMask.empty(tiny, "m").add(tiny, DOWN, "columns", [5], "click")
    for choice, expected in (("auto", [True, True, False, False]), ("on", [True] * 4), ("off", [False] * 4)):
        config = train_data.TrainConfig(steps=1, batch_size=2, seq_len=16, checkpoint=choice)
        data = train_data.make_data(tiny, train_data.load_corpus("code"), config)
        result = compare(tiny, mask, ("ln", "lora", "full"), data, config, tmp_path / choice)
        assert [r.checkpointing for r in result.runs] == expected
        assert [r.method for r in result.runs] == ["mask", "ln", "lora", "full"]
    with pytest.raises(InputError) as err:
        train_data.TrainConfig(checkpoint="yes")
    assert err.value.field == "checkpoint"


def test_full_tuning_saves_switches_and_reloads_its_weights(tiny, tmp_path):
    saved = snapshot(tiny)
    generator = torch.Generator().manual_seed(3)
    tuning = FullTuning(tiny)
    with torch.no_grad():
        for p in tuning.parameters():
            p.add_(torch.randn(p.shape, generator=generator))
    tuned = snapshot(tiny)
    path = tuning.save(tmp_path / "deltas.safetensors")
    assert tuning.changed() == sum(t.numel() for t in saved.values())
    tuning.set_enabled(False)
    assert_restored(tiny, saved)
    tuning.set_enabled(True)
    assert all(torch.equal(p, tuned[n]) for n, p in base_parameters(tiny).items())
    tuning.detach()
    assert_restored(tiny, saved)

    again = FullTuning(tiny)
    again.load_values(path)
    assert all(torch.equal(p, tuned[n]) for n, p in base_parameters(tiny).items())  # bit for bit, not base + difference
    again.detach()
    assert_restored(tiny, saved)
    sparse_file = tmp_path / "sparse.safetensors"
    with SparseTuner(tiny, make_mask(tiny)) as tuner:
        tuner.save(sparse_file)
    with pytest.raises(InputError) as err:
        FullTuning(tiny).load_values(sparse_file)
    assert err.value.field == "deltas"
    assert_restored(tiny, saved)
