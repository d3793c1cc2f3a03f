"""A fine-tune's held-out evaluation: the token-weighted mean next-token loss over packed
blocks, or over the completion tokens of task rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from pydantic import model_serializer
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from outlier_core.intervene.loss import Loss, finite_or_none, lm_loss
from outlier_core.load.models import LoadedModel
from outlier_core.tune.task_data import IGNORE_INDEX, completion_loss


class RunLossJson(TypedDict):
    loss: float | None
    perplexity: float | None
    tokens: int


@dataclass(frozen=True)
class RunLoss(Loss):
    """A `Loss` as the run files and the fine-tune routes have always written it: the count
    is called `tokens` there. (A pydantic serializer on an `Annotated[Loss, ...]` alias would
    say the same, but pydantic 2.14 cannot build a schema that uses such an alias twice.)"""

    @model_serializer(mode="plain")
    def _json(self) -> RunLossJson:
        return {"loss": finite_or_none(self.loss), "perplexity": finite_or_none(self.perplexity), "tokens": self.n_tokens}


def batch_loss(model: LoadedModel, ids: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-token loss of ids (B, S) through the bridge; with labels (B, S), only where they are set."""
    if labels is None:
        return lm_loss(model, ids)
    logits = model.bridge(ids.to(model.device), return_type="logits")  # (B, S, V)
    return completion_loss(logits, labels.to(model.device))


def held_out_loss(
    model: LoadedModel, blocks: torch.Tensor, batch_size: int, between: Callable[[], None] = lambda: None, labels: torch.Tensor | None = None
) -> RunLoss:
    """Token-weighted mean loss over `blocks` (N, S), on the labelled tokens when `labels`
    (N, S) are given; `between()` runs before each batch (a stop check raises there, so a
    cancel does not wait for the whole evaluation)."""
    total, tokens = 0.0, 0
    with torch.inference_mode():
        for start in range(0, blocks.shape[0], batch_size):
            between()
            chunk = blocks[start : start + batch_size]  # (b, S)
            chunk_labels = None if labels is None else labels[start : start + batch_size]  # (b, S)
            n = chunk.shape[0] * (chunk.shape[1] - 1) if chunk_labels is None else int((chunk_labels[:, 1:] != IGNORE_INDEX).sum())
            total += float(batch_loss(model, chunk, chunk_labels)) * n
            tokens += n
    return RunLoss(total / tokens, tokens)
