"""Attention patterns of a long prompt pooled on the device into blocks of positions:
what comes back is bounded whatever the prompt's length, and it is the exact block
average of the full patterns (checked against an independently built HF model)."""

from __future__ import annotations

import pytest
import torch

from outlier_core.load.tokens import encode
from outlier_core.observe.capture import (
    attention_patterns_encoded,
    pool_pattern,
    position_blocks,
)
from tests.hf_reference import byte_ids, hf_forward

TEXT = "The tide came in over the flats while the heron waited by the channel. " * 6


def test_blocks_keep_position_zero_alone_and_cover_every_position():
    assert position_blocks(10, 16) == tuple(range(10))
    starts = position_blocks(1000, 100)
    assert starts[:2] == (0, 1) and len(starts) <= 100
    sizes = [b - a for a, b in zip(starts, (*starts[1:], 1000))]
    assert sizes[0] == 1 and sum(sizes) == 1000 and max(sizes[1:]) - min(sizes[1:]) <= max(sizes[1:])


def test_pooling_is_the_block_average_of_the_attention_mass():
    pattern = torch.softmax(torch.randn(3, 11, 11), dim=-1)  # (H, T, T), rows sum to 1
    starts = (0, 1, 5, 9)
    pooled = pool_pattern(pattern, starts)  # (3, 4, 4)
    edges = [*starts, 11]
    for q in range(4):
        for k in range(4):
            block = pattern[:, edges[q]:edges[q + 1], edges[k]:edges[k + 1]]  # (H, queries, keys)
            assert pooled[:, q, k] == pytest.approx(block.sum(dim=-1).mean(dim=-1), abs=1e-6)
    assert pooled.sum(dim=-1) == pytest.approx(torch.ones(3, 4), abs=1e-6)


def test_long_prompt_comes_back_pooled_and_equal_to_hf(tiny, hf_tiny):
    encoded = encode(tiny, TEXT)
    n = encoded.ids.shape[1]
    found = attention_patterns_encoded(tiny, encoded, 2, max_blocks=40)
    assert len(found.starts) <= 40 < n and found.pattern.shape == (tiny.n_heads, len(found.starts), len(found.starts))
    full = hf_forward(hf_tiny, byte_ids(hf_tiny, TEXT))[2][2][0]  # (H, T, T)
    assert found.pattern == pytest.approx(pool_pattern(full, found.starts), abs=1e-5)
    assert found.sink_share == pytest.approx(full[:, :, 0].mean(dim=-1), abs=1e-5)  # exact, not pooled
    whole = attention_patterns_encoded(tiny, encoded, 2)
    assert whole.starts == tuple(range(n)) and whole.pattern.shape == (tiny.n_heads, n, n)
