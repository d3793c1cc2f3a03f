"""Block activation checkpointing: decoder blocks recompute their activations in the backward pass."""

from __future__ import annotations

import functools
import logging
from contextlib import contextmanager
from typing import Iterator

from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.modeling_layers import GradientCheckpointingLayer

from outlier_core.errors import InputError
from outlier_core.load.models import LoadedModel
from outlier_core.tune.methods.base import TuningMethod
from outlier_core.tune.train_data import TrainConfig

log = logging.getLogger(__name__)


def checkpoints_blocks(model: LoadedModel, method: TuningMethod, config: TrainConfig) -> bool:
    """Whether `method`'s run recomputes block activations in its backward pass.

    "auto" leaves it to the method (`recomputes_by_default`: the coordinate tunings, whose
    training memory is nearly all activations; LoRA and full fine-tuning run as peft and
    Hugging Face run them by default); "on" checkpoints every method, for an equal footing.
    """
    wanted = config.checkpoint == "on" or (config.checkpoint == "auto" and method.recomputes_by_default)
    if wanted and not checkpointable_blocks(model):
        if config.checkpoint == "on":
            raise InputError("checkpoint", f"{model.name} has no blocks that support activation checkpointing; use off")
        log.info("%s has no checkpointable blocks; %s keeps its activations", model.name, method.name)
        return False
    return wanted


def checkpointable_blocks(model: LoadedModel) -> list[nn.Module]:
    if not getattr(model.hf_model, "supports_gradient_checkpointing", False):
        return []
    return [m for m in model.hf_model.modules() if isinstance(m, GradientCheckpointingLayer)]


@contextmanager
def block_checkpointing(model: LoadedModel, on: bool) -> Iterator[None]:
    """Inside: each decoder block keeps only its inputs for the backward pass and recomputes
    the rest there (torch's non-reentrant checkpoint). Gradients are unchanged.

    Set block by block through the switches Hugging Face's `GradientCheckpointingLayer`
    reads (its checkpoint function, its flag, and its own `training` flag, not its
    children's: dropout stays as it was). The model-wide `activation_checkpointing_enable`
    would also make the input embeddings require grad, which drags every method's backward
    pass down to layer 0, and leaves that hook behind.
    """
    if not on:
        yield
        return
    blocks = checkpointable_blocks(model)
    saved = [(b.training, b.gradient_checkpointing, b.__dict__.get("_gradient_checkpointing_func")) for b in blocks]
    for block in blocks:
        block._gradient_checkpointing_func = functools.partial(checkpoint, use_reentrant=False)
        block.gradient_checkpointing = True
        block.training = True
    try:
        yield
    finally:
        for block, (training, flag, func) in zip(blocks, saved):
            block.training, block.gradient_checkpointing = training, flag
            if func is None:
                del block._gradient_checkpointing_func
            else:
                block._gradient_checkpointing_func = func
