"""A selection mask on a plain `nn.Module` (a `transformers` model, no bridge, no peft): the path
for people who train in their own loop.

    attached = attach_mask(model, "masks/outliers.safetensors")  # everything else frozen
    optimizer = torch.optim.AdamW(attached.parameters(), lr=1e-3, weight_decay=0.1)
    ...  # the usual loop: model(**batch).loss.backward(); optimizer.step()
    attached.merge()  # base + delta written into the weights; or attached.detach() for the base

The trainable state is the sparse core's values at the mask's coordinates (`sparse.SparseDeltas`):
weight decay acts on those values only, and every other weight has no optimizer state and no
gradient, so no optimizer can move it (DESIGN.md, "Sparse fine-tune").
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from outlier_core.errors import InputError
from outlier_core.select.mask_files import load_mask
from outlier_core.select.masks import SelectionMask
from outlier_core.tune.sparse import (
    SparseDeltas,
    module_slots,
    read_deltas,
    save_deltas,
)


def module_shapes(root: nn.Module) -> tuple[dict[str, tuple[int, ...]], int]:
    """({plain HF name: shape}, parameter count) of a module, with or without deltas attached."""
    shapes = {name: tuple(getattr(slots[0].module, slots[0].attr).shape) for name, slots in module_slots(root).items()}
    total = sum(int(torch.Size(shape).numel()) for shape in shapes.values())
    return shapes, total


def check_mask_fits(root: nn.Module, mask: SelectionMask) -> None:
    """Raise InputError unless every part of `mask` names a parameter of `root` with the same shape
    and `root` has the parameter count of the model the mask was built for."""
    shapes, total = module_shapes(root)
    if total != mask.n_model_params:
        raise InputError(
            "mask.model",
            f"the mask was built for {mask.model} ({mask.n_model_params:,} parameters) but this model has {total:,} parameters",
        )
    for name, shape in mask.shapes.items():
        if name not in shapes:
            raise InputError("mask.parameters", f"{name} is not a parameter of this model")
        if shapes[name] != tuple(shape):
            raise InputError("mask.model", f"{name} has shape {list(shapes[name])} here but {list(shape)} in the mask (built for {mask.model})")
    if mask.count == 0:
        raise InputError("mask", "selects no coordinates")


def as_mask(mask: SelectionMask | str | Path) -> SelectionMask:
    """A mask object, or one loaded from MASK.json / MASK.safetensors."""
    return mask if isinstance(mask, SelectionMask) else load_mask(mask)


class AttachedMask:
    """A mask's trainable deltas on a module whose own parameters are frozen meanwhile.

    Build it with `attach_mask`. `detach()` gives the module back bit for bit, `merge()` with
    base + delta in its weights; both put back every parameter's `requires_grad`.
    """

    def __init__(self, root: nn.Module, mask: SelectionMask):
        check_mask_fits(root, mask)
        self.root = root
        self.mask = mask
        self._flags = [(p, p.requires_grad) for p in root.parameters()]
        for p, _ in self._flags:
            p.requires_grad_(False)
        try:
            self.deltas = SparseDeltas(root, mask.coordinates)
        except Exception:
            self._restore_flags()
            raise
        for values in self.deltas.parameters():
            values.requires_grad_(True)

    def parameters(self) -> list[nn.Parameter]:
        """The only trainable tensors: one values vector (K,) per parameter the mask touches."""
        return self.deltas.parameters()

    @property
    def trainable(self) -> int:
        return self.deltas.trainable

    def set_enabled(self, enabled: bool) -> None:
        """Off: the module computes exactly its base weights (the deltas are kept)."""
        self.deltas.set_enabled(enabled)

    def save(self, path: str | Path) -> Path:
        """The deltas in the workbench's run format (`NAME.index`, `NAME.values`)."""
        return save_deltas(path, self.deltas, self.mask)

    def load_values(self, path: str | Path) -> None:
        """Set the deltas from a file written by `save` (or a workbench run) for the same mask."""
        self.deltas.load_tensors(read_deltas(path), Path(path).name)

    def detach(self) -> nn.Module:
        """Remove the deltas: the base weights are back, untouched. Returns the module."""
        self.deltas.detach()
        self._restore_flags()
        return self.root

    def merge(self) -> nn.Module:
        """Write base + delta into the weights for good and remove the deltas. Returns the module."""
        self.deltas.merge()
        self._restore_flags()
        return self.root

    def _restore_flags(self) -> None:
        for p, flag in self._flags:
            p.requires_grad_(flag)


def attach_mask(root: nn.Module, mask: SelectionMask | str | Path) -> AttachedMask:
    """Make exactly the mask's coordinates of `root` trainable: Linear entries, rows, columns and norm
    weights alike, under their plain Hugging Face names."""
    return AttachedMask(root, as_mask(mask))
