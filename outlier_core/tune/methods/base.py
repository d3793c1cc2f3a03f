"""What a tuning method is, in peft's shape: one object that attaches its trainable state
to a model, says how its backward pass runs, and saves and loads that state.

The training loop, the run files and `applied_run` speak only to this interface; nothing
outside a method's own module asks which method it is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

from torch import nn

from outlier_core.load.models import LoadedModel
from outlier_core.select.masks import SelectionMask
from outlier_core.tune.train_data import TrainConfig

DELTAS_FILE = "deltas.safetensors"


class Tuning(Protocol):
    """Trainable state on a model: the model computes base + it until `detach()` (the base
    comes back bit for bit) or `merge()` (base + it become the model's own weights)."""

    def parameters(self) -> list[nn.Parameter]: ...
    @property
    def trainable(self) -> int: ...
    def changed(self) -> int: ...
    def set_enabled(self, enabled: bool) -> None: ...
    def save(self, path: str | Path) -> Path: ...
    def merge(self) -> None: ...
    def detach(self) -> None: ...


@dataclass(frozen=True)
class Attached:
    name: str  # the run's name: the mask's, "random", "ln_only", "lora_r4", "full"
    tuning: Tuning
    details: dict = field(default_factory=dict)  # method specifics for the run record: mask count, LoRA rank and targets


class TuningMethod(ABC):
    name: ClassVar[str]
    # Whether checkpoint="auto" recomputes block activations in this method's backward pass.
    recomputes_by_default: ClassVar[bool] = False
    # Whether the model's parameters hold what it computes with while the state is attached
    # (not under a parametrization or an adapter layer), so code reading weights by name sees it.
    weights_in_place: ClassVar[bool] = False

    @abstractmethod
    def attach(self, model: LoadedModel, mask: SelectionMask, config: TrainConfig) -> Attached:
        """Fresh trainable state on `model`, sized from `mask` where the method has a budget."""

    @abstractmethod
    def load(self, model: LoadedModel, folder: Path, deltas: Path) -> Tuning:
        """The state a run saved (`save` wrote `deltas` inside `folder`), attached to `model`."""

    def learning_rate(self, config: TrainConfig) -> float:
        return config.lr

    def lean_backward(self, tuning: Tuning) -> AbstractContextManager:
        """A context around one step's forward and backward pass that trims what it keeps."""
        return nullcontext()

    def save(self, tuning: Tuning, folder: Path) -> str:
        """Write the trained state into `folder`; returns the deltas file's name."""
        tuning.save(folder / DELTAS_FILE)
        return DELTAS_FILE
