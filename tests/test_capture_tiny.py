"""Capture on the tiny random model, checked against the plain Hugging Face model it wraps."""

from __future__ import annotations

import pytest
import torch

from outlier_core.errors import InputError
from outlier_core.load.models import LoadedModel, load_model
from outlier_core.load.sites import SITES
from outlier_core.load.tokens import encode
from outlier_core.observe.capture import attention_patterns, layer_matrix, scan
from outlier_core.observe.detect import MassiveRule
from outlier_core.observe.recurrence import recurring_outliers
from tests.hf_reference import byte_ids, hf_forward

TEXT = "Tiny models still have residual streams."


def test_bos_is_prepended_only_when_asked(tiny: LoadedModel) -> None:
    with_bos = encode(tiny, TEXT, prepend_bos=True)
    without = encode(tiny, TEXT, prepend_bos=False)
    assert with_bos.ids[0, 0].item() == tiny.bos_token_id
    assert with_bos.ids[0, 1:].tolist() == without.ids[0].tolist()
    assert without.ids[0, 0].item() != tiny.bos_token_id
    assert "".join(without.tokens) == TEXT


def test_scan_top_entries_match_the_plain_hf_model(tiny: LoadedModel, hf_tiny) -> None:
    result = scan(tiny, TEXT, top_k=5)
    reference = hf_forward(hf_tiny, byte_ids(hf_tiny, TEXT))[0]  # L × (T, D)
    assert len(result.layers) == tiny.n_layers == len(reference)
    for summary, h in zip(result.layers, reference):
        values, index = h.abs().flatten().topk(5)
        assert [(t.position, t.dim) for t in summary.top] == [(int(i) // h.shape[1], int(i) % h.shape[1]) for i in index]
        assert [t.value for t in summary.top] == pytest.approx(h.flatten()[index].tolist(), rel=1e-4, abs=1e-6)
        assert summary.median_abs == pytest.approx(float(h.abs().flatten().median()), rel=1e-4)
        assert summary.max_abs == pytest.approx(float(values[0]), rel=1e-4)


@pytest.mark.parametrize("site", list(SITES))
def test_every_site_captures_every_layer(tiny: LoadedModel, site: str) -> None:
    result = scan(tiny, TEXT, site=site, top_k=2)
    assert [s.layer for s in result.layers] == list(range(tiny.n_layers))
    width = tiny.d_mlp if site == "mlp_post" else tiny.d_model
    assert all(0 <= t.dim < width and 0 <= t.position < len(result.tokens) for s in result.layers for t in s.top)
    matrix = layer_matrix(tiny, TEXT, layer=1, site=site)
    assert matrix.values.shape == (len(result.tokens), width)


def test_sink_share_is_the_attention_on_position_zero(tiny: LoadedModel) -> None:
    result = scan(tiny, TEXT)
    T = len(result.tokens)
    for layer in range(tiny.n_layers):
        pattern = attention_patterns(tiny, TEXT, layer).pattern  # (H, T, T)
        assert pattern.shape == (tiny.n_heads, T, T)
        assert torch.allclose(pattern.sum(-1), torch.ones(tiny.n_heads, T), atol=1e-5)
        assert torch.equal(pattern.triu(1), torch.zeros_like(pattern))  # causal
        assert result.sink_share[layer] == pytest.approx(float(pattern[:, :, 0].mean()), rel=1e-5)
        assert sum(result.key_share[layer]) == pytest.approx(1.0, rel=1e-5)


def test_scan_leaves_no_hooks_behind_even_on_error(tiny: LoadedModel) -> None:
    def count_hooks() -> int:
        return sum(len(hp._forward_hooks) for hp in tiny.bridge.hook_dict.values())

    before = count_hooks()
    scan(tiny, TEXT)
    assert count_hooks() == before
    with pytest.raises(InputError):
        scan(tiny, TEXT, site="not_a_site")
    with pytest.raises(InputError) as err:
        layer_matrix(tiny, TEXT, layer=tiny.n_layers)
    assert err.value.field == "layer"
    assert count_hooks() == before


def test_bad_text_and_top_k_name_the_field(tiny: LoadedModel) -> None:
    for kwargs, field in (({"text": ""}, "text"), ({"text": "x" * 5000}, "text"), ({"text": "ok", "top_k": 0}, "top_k")):
        with pytest.raises(InputError) as err:
            scan(tiny, **kwargs)
        assert err.value.field == field


def test_recurrence_counts_a_planted_outlier_token() -> None:
    model = load_model("tiny-random", device="cpu")  # its own copy: the embedding is edited below
    planted_token = model.tokenizer("#", add_special_tokens=False).input_ids[0]
    with torch.no_grad():
        model.hf_parameters()["model.embed_tokens.weight"][planted_token, 13] = 5000.0
    texts = ["a # b", "no mark here", "# again #", "plain"]
    rule = MassiveRule(abs_threshold=100.0, median_ratio=1000.0)
    found = recurring_outliers(model, texts, prepend_bos=True, rule=rule)
    assert found.n_prompts == 4
    assert found.dims == ((13, 2),)
    assert dict(found.tokens) == {"#": 2}
    assert dict(found.positions) == {3: 1, 1: 1, 9: 1}  # BOS shifts every position by one
