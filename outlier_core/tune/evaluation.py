"""A fine-tune's held-out evaluation: the token-weighted mean next-token loss over packed
blocks, or over the completion tokens of task rows."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch
from pydantic import model_serializer
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from outlier_core.intervene.loss import Loss, finite_or_none, lm_loss
from outlier_core.load.models import LoadedModel
from outlier_core.tune.distributed import SINGLE, World
from outlier_core.tune.task_data import IGNORE_INDEX, completion_loss

log = logging.getLogger(__name__)

ForwardLoss = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]  # (ids (B, S), labels (B, S) or None) -> mean loss


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
    model: LoadedModel,
    blocks: torch.Tensor,
    batch_size: int,
    between: Callable[[], None] = lambda: None,
    labels: torch.Tensor | None = None,
    world: World = SINGLE,
    forward_loss: ForwardLoss | None = None,
) -> RunLoss:
    """Token-weighted mean loss over `blocks` (N, S), on the labelled tokens when `labels`
    (N, S) are given; `between()` runs before each batch (a stop check raises there, so a
    cancel does not wait for the whole evaluation).

    Over a `world` of N processes each rank scores its share of every N batches and the loss
    sums and token counts are summed over ranks: the mean one process would get, N times as
    fast. Every rank takes the same number of turns (`between` may be a collective). With
    `forward_loss(ids, labels)` (a sharded model's own forward, itself a collective) a rank
    whose share of a turn is empty runs it on a block it throws away, in step with the others."""
    total, tokens, scored = 0.0, 0, 0
    span = batch_size * world.size
    # FSDP reuses its gathered buffers in place afterwards: they must not be inference tensors
    with torch.inference_mode() if forward_loss is None else torch.no_grad():
        for start in range(0, blocks.shape[0], span):
            between()
            chunk = world.part(blocks[start : start + span])  # (<= batch_size, S)
            chunk_labels = None if labels is None else world.part(labels[start : start + span])  # (<= batch_size, S)
            n = chunk.shape[0] * (chunk.shape[1] - 1) if chunk_labels is None else int((chunk_labels[:, 1:] != IGNORE_INDEX).sum())
            if n == 0:  # this rank's share of the last chunk is empty, or holds no labelled token
                if forward_loss is not None:
                    forward_loss(blocks[:1], None)
                continue
            loss = batch_loss(model, chunk, chunk_labels) if forward_loss is None else forward_loss(chunk, chunk_labels)
            total += float(loss) * n
            tokens += n
            scored += chunk.shape[0]
    if world.size > 1:
        log.info("held-out evaluation: this rank scored %d of %d blocks", scored, blocks.shape[0])
    total, tokens = world.sums(total, float(tokens))
    return RunLoss(total / tokens, int(tokens))
