"""full: every weight trains; the base values are kept aside on the CPU and put back afterwards."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from outlier_core.errors import InputError
from outlier_core.load.models import LoadedModel
from outlier_core.select.masks import SelectionMask, plain_name
from outlier_core.tune.methods.base import Attached, TuningMethod
from outlier_core.tune.train_data import TrainConfig
from outlier_core.tune.tuned_files import read_tuned_file

FULL_FORMAT = "outlier-lab-full/1"


class FullTuning:
    """Every base weight trains. A copy of the base stays on the CPU and is restored by `detach()`."""

    def __init__(self, model: LoadedModel):
        self.model = model
        self.params = _unique_parameters(model)
        self._saved = _cpu_copy(self.params)
        self._tuned: dict[str, torch.Tensor] | None = None  # held on the CPU while switched off

    def parameters(self) -> list[nn.Parameter]:
        return list(self.params.values())

    @property
    def trainable(self) -> int:
        return sum(p.numel() for p in self.params.values())

    def set_enabled(self, enabled: bool) -> None:
        """Off: the base values are put in place and the tuned ones kept on the CPU; on: back."""
        if enabled == (self._tuned is None):
            return
        if enabled:
            self._copy_in(self._tuned)
            self._tuned = None
        else:
            self._tuned = _cpu_copy(self.params)
            self._copy_in(self._saved)

    def changed(self) -> int:
        with torch.no_grad():
            return sum(int((self._tuned_value(n) != self._saved[n]).sum()) for n in self.params)

    def save(self, path: str | Path) -> Path:
        """The tuned weights themselves, as large as the model: a stored difference would not
        give the tuned values back bit for bit when added to the base."""
        from safetensors.torch import save_file

        save_file({n: self._tuned_value(n).contiguous() for n in self.params}, str(path), metadata={"format": FULL_FORMAT})
        return Path(path)

    def load_values(self, path: str | Path) -> None:
        """Put the tuned weights of a file written by `save` (same model) in place."""
        _, tensors = read_tuned_file(path, FULL_FORMAT, "full fine-tune weights")
        if set(tensors) != set(self.params):
            raise InputError("deltas", f"{Path(path).name} does not hold this model's weights (names differ)")
        for name, p in self.params.items():
            if tensors[name].shape != p.shape:
                raise InputError("deltas", f"{name} has shape {list(tensors[name].shape)} in the file, {list(p.shape)} in the model")
        self._tuned = None
        self._copy_in(tensors)

    def merge(self) -> None:
        """Keep the tuned weights for good (switched on first) and forget the base copy."""
        self.set_enabled(True)
        self._saved = {}

    def detach(self) -> None:
        """Put the base values back (the tuned ones are dropped)."""
        self._tuned = None
        if self._saved:
            self._copy_in(self._saved)
        for p in self.params.values():
            p.grad = None

    def _tuned_value(self, name: str) -> torch.Tensor:
        """The tuned value of one weight, on the CPU (no copy where it already lives there)."""
        return self._tuned[name] if self._tuned is not None else self.params[name].detach().cpu()

    def _copy_in(self, values: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(values[name].to(p.device))


def _cpu_copy(params: dict[str, nn.Parameter]) -> dict[str, torch.Tensor]:
    return {name: p.detach().to("cpu", copy=True) for name, p in params.items()}


def _unique_parameters(model: LoadedModel) -> dict[str, nn.Parameter]:
    found: dict[str, nn.Parameter] = {}
    seen: set[int] = set()
    for full_name, p in model.hf_model.named_parameters():
        name = plain_name(full_name)
        if name is not None and id(p) not in seen:
            seen.add(id(p))
            found[name] = p
    return found


class FullMethod(TuningMethod):
    name = "full"
    weights_in_place = True  # the tuned values are written into the parameters themselves

    def attach(self, model: LoadedModel, mask: SelectionMask, config: TrainConfig) -> Attached:
        return Attached("full", FullTuning(model))

    def learning_rate(self, config: TrainConfig) -> float:
        return config.full_lr

    def load(self, model: LoadedModel, folder: Path, deltas: Path) -> FullTuning:
        tuning = FullTuning(model)
        try:
            tuning.load_values(deltas)
        except Exception:
            tuning.detach()
            raise
        return tuning


METHOD = FullMethod()
