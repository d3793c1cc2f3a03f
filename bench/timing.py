"""What every benchmark shares: a synchronised stopwatch and a prompt of a given length."""

from __future__ import annotations

import time
from typing import Callable

import torch

from outlier_core.intervene.corpus import bundled


def timed(fn: Callable[[], object], device: str = "cpu") -> float:
    """Seconds for one call; on CUDA, queued kernels are waited for on both sides."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def prompt_of(model, n_tokens: int) -> str:
    """The first `n_tokens` tokens of the bundled prose (BOS included), as text."""
    ids = model.tokenizer(bundled().text, add_special_tokens=False).input_ids[: n_tokens - 1]
    return model.tokenizer.decode(ids)
