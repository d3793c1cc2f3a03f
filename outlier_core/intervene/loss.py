"""Next-token loss: the one measure of "how well does the model predict this text" in the core.

An intervention's arms and a fine-tune's held-out blocks are both scored as a `Loss`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import model_serializer
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from outlier_core.load.models import LoadedModel

# The one overflow rule: from a loss of 700 nats on (exp overflows a float near 709) the
# perplexity is inf, not a clamped number; JSON, which has no inf or NaN, carries null.
MAX_EXP_LOSS = 700.0


class LossJson(TypedDict):
    loss: float | None
    perplexity: float | None
    n_tokens: int


def finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class Loss:
    loss: float  # mean next-token NLL in nats
    n_tokens: int  # predictions scored

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if self.loss < MAX_EXP_LOSS else math.inf

    @model_serializer(mode="plain")
    def _json(self) -> LossJson:
        return {"loss": finite_or_none(self.loss), "perplexity": finite_or_none(self.perplexity), "n_tokens": self.n_tokens}


def lm_loss(model: LoadedModel, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy through the bridge's forward (hooks fire). ids: (B, S)."""
    ids = ids.to(model.device)
    logits = model.bridge(ids, return_type="logits")  # (B, S, V)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16/fp16 logits lose the loss's precision
    # shift the targets, not the logits: slicing (B, S, V) would copy the largest tensor of the step
    targets = F.pad(ids[:, 1:], (0, 1), value=-100)  # (B, S); -100: no target after the last token
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
