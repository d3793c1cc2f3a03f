"""The coordinate methods: a selection of weight entries trains through a `SparseTuner`
(values at fixed indices), whichever way the selection is chosen."""

from __future__ import annotations

from abc import abstractmethod
from contextlib import AbstractContextManager
from pathlib import Path

from outlier_core.load.models import LoadedModel
from outlier_core.select.mask_files import load_mask
from outlier_core.select.masks import SelectionMask
from outlier_core.tune.methods.base import Attached, TuningMethod
from outlier_core.tune.sparse import SparseTuner, apply_deltas
from outlier_core.tune.train_data import TrainConfig

MASK_FILE = "mask.safetensors"  # the coordinates, read back when a run is applied; mask.json beside it is for people


class CoordinateMethod(TuningMethod):
    # Their trainable state is a few thousand values, so activations are nearly all of their
    # training memory, and a selection holding a layer-0 coordinate (super weights and early
    # norm outliers live there) makes the backward pass keep every block's activations.
    recomputes_by_default = True

    @abstractmethod
    def selection(self, model: LoadedModel, mask: SelectionMask, config: TrainConfig) -> tuple[str, SelectionMask, dict]:
        """(run name, the coordinates to train, details for the run record)."""

    def attach(self, model: LoadedModel, mask: SelectionMask, config: TrainConfig) -> Attached:
        name, selection, details = self.selection(model, mask, config)
        return Attached(name, SparseTuner(model, selection), details)

    def lean_backward(self, tuning: SparseTuner) -> AbstractContextManager:
        return tuning.lean_backward()

    def save(self, tuning: SparseTuner, folder: Path) -> str:
        tuning.mask.save(folder / MASK_FILE)  # writes mask.json and mask.safetensors
        return super().save(tuning, folder)

    def load(self, model: LoadedModel, folder: Path, deltas: Path) -> SparseTuner:
        return apply_deltas(model, load_mask(folder / MASK_FILE), deltas)
