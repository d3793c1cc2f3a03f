"""Shared fixtures: one tiny random model and one real SmolLM2, each loaded once per session."""

from __future__ import annotations

import logging

import pytest
import torch

from outlier_core.load.models import LoadedModel, load_model, tiny_random_hf

# A plain English prompt written for these tests; any ordinary prose shows the same outliers.
PROSE = (
    "The old lighthouse keeper walked down to the harbour every morning before sunrise. "
    "He counted the fishing boats, wrote the weather in a small notebook, and then went "
    "home to make tea for his sister, who had lived with him since the winter storm."
)


@pytest.fixture(scope="session", autouse=True)
def _quiet_logs() -> None:
    logging.getLogger("transformers").setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def tiny() -> LoadedModel:
    torch.manual_seed(0)
    return load_model("tiny-random", device="cpu")


@pytest.fixture(scope="session")
def smol() -> LoadedModel:
    return load_model("smollm2-135m", device="cpu")


@pytest.fixture(scope="session")
def hf_tiny() -> torch.nn.Module:
    """An independently built copy of the tiny model (same seed), eager attention for patterns.

    It never passes through TransformerLens: the reference the bridge's numbers are checked against.
    """
    hf, tokenizer = tiny_random_hf()
    hf.set_attn_implementation("eager")
    hf.byte_tokenizer = tokenizer
    return hf.eval()
