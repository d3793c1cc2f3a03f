"""The one tokenization path: the tokenizer adds nothing, BOS is prepended only when asked.

SmolLM2's tokenizer adds no BOS while `bridge.to_tokens` prepends one by default, so
positions would shift by one between the two. Every caller goes through `encode`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from outlier_core.errors import InputError
from outlier_core.load.models import LoadedModel


@dataclass(frozen=True)
class Encoded:
    ids: torch.Tensor  # (1, T) on the model's device
    tokens: tuple[str, ...]  # T decoded pieces, one per position
    prepend_bos: bool


def encode(model: LoadedModel, text: str, prepend_bos: bool = True, max_tokens: int | None = None) -> Encoded:
    if not isinstance(text, str) or not text:
        raise InputError("text", "must be a non-empty string")
    ids = model.tokenizer(text, add_special_tokens=False).input_ids
    if prepend_bos:
        ids = [model.bos_token_id, *ids]
    limit = min(max_tokens or model.n_ctx, model.n_ctx)
    if len(ids) > limit:
        raise InputError("text", f"is {len(ids)} tokens long; the limit is {limit}")
    return Encoded(
        ids=torch.tensor([ids], device=model.device),
        tokens=tuple(model.tokenizer.decode([i]) for i in ids),
        prepend_bos=prepend_bos,
    )
