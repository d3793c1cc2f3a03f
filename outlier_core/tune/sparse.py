"""The sparse fine-tune's trainable state: per parameter, a values vector at fixed indices.

`W = W_base + scatter(values at the selected flat positions)`, registered with
`torch.nn.utils.parametrize` on every module that holds W (a tied weight has two). Whoever
calls those modules sees base + delta, so every TransformerLens hook keeps firing, and the
optimizer sees only the values: its state is O(selected coordinates). The base tensor is
never written (its `requires_grad` is off while training, and weight decay acts on the
values, i.e. pulls the tuned model back towards the base) unless `merge()` is asked for.

Masking the gradient of a dense parameter is not enough: AdamW's decoupled weight decay
then moves every coordinate (measured: 3.5 million outside a 4,096-coordinate mask in one
step). Here the unselected coordinates have no optimizer state at all.

One core, three users: `SparseDeltas` attaches to any `nn.Module` under plain Hugging Face
parameter names; `SparseTuner` is the workbench's run on a bridged `LoadedModel` (model-cache
bookkeeping, run files); `attach.attach_mask` and the peft method in `peft_mask` put the same
deltas on a plain `transformers` model.
"""

from __future__ import annotations

import json
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from outlier_core.errors import InputError
from outlier_core.load.model_cache import model_changed
from outlier_core.load.models import LoadedModel
from outlier_core.load.placement import give_back, hold_in_memory, module_tensor_values
from outlier_core.select.masks import SelectionMask, plain_name
from outlier_core.tune.tuned_files import read_tuned_file

DELTAS_FORMAT = "outlier-lab-deltas/1"


class SparseDelta(nn.Module):
    """A parametrization: base -> base with `values` added at `flat_index` (row-major positions).

    `persistent_index`: the index is part of the owner's `state_dict` (the peft method saves it
    beside the values); the workbench keeps it out, as its run files store it themselves.
    """

    def __init__(self, flat_index: torch.Tensor, base: torch.Tensor, persistent_index: bool = False):
        super().__init__()
        index = flat_index.to(device=base.device, dtype=torch.int64)  # (K,)
        self.register_buffer("flat_index", index, persistent=persistent_index)
        # at least float32 whatever the model's dtype: Adam's updates are smaller than a bf16 step
        dtype = torch.float64 if base.dtype == torch.float64 else torch.float32
        self.values = nn.Parameter(torch.zeros(flat_index.numel(), dtype=dtype, device=base.device))  # (K,)
        self.enabled = True
        self.made: dict[int, tuple[weakref.ref, SparseDelta, torch.Tensor]] | None = None  # set by `lean_backward`

    def forward(self, base: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return base
        tuned = self.add_to(base)
        if self.made is not None and torch.is_grad_enabled():
            self.made[tuned.untyped_storage().data_ptr()] = (weakref.ref(tuned), self, base)
        return tuned

    def add_to(self, base: torch.Tensor) -> torch.Tensor:
        # out-of-place index_add copies base and adds only at the selected positions
        return base.flatten().index_add(0, self.flat_index, self.values.to(base.dtype)).view_as(base)


@dataclass(frozen=True)
class _Slot:
    module: nn.Module
    attr: str


def module_slots(root: nn.Module) -> dict[str, list[_Slot]]:
    """Plain HF name -> every (module, attribute) under `root` that holds that tensor (tied weights have two).

    Reading `getattr(slot.module, slot.attr)` gives what the model computes with: the base
    weight, or base + delta where deltas are attached. Names are relative to `root`, seen
    through the bridge, a parametrization or a peft layer's `base_layer`.
    """
    by_tensor: dict[int, str] = {}
    slots: dict[str, list[_Slot]] = {}
    for module_name, module in root.named_modules():
        if ".parametrizations." in f"{module_name}." or isinstance(module, SparseDelta):
            continue  # deltas' own containers; their owner module is listed instead
        held = {attr: p for attr, p in module._parameters.items() if p is not None}
        if "parametrizations" in module._modules:  # its own: bridge wrappers forward attribute lookups
            held.update({attr: getattr(module.parametrizations, attr).original for attr in module.parametrizations.keys()})
        for attr, tensor in held.items():
            name = plain_name(f"{module_name}.{attr}" if module_name else attr)
            if name is None:
                continue
            name = by_tensor.setdefault(id(tensor), name)  # a tied tensor keeps its first name
            slots.setdefault(name, []).append(_Slot(module, attr))
    return slots


def parameter_slots(model: LoadedModel) -> dict[str, list[_Slot]]:
    """`module_slots` of the bridged model's Hugging Face model."""
    return module_slots(model.hf_model)


def effective_weights(model: LoadedModel, names: list[str]) -> dict[str, torch.Tensor]:
    """The weights the model computes with right now, by plain HF name (detached; an offloaded
    layer's from its offload loader)."""
    slots = parameter_slots(model)
    with torch.no_grad():
        found = {n: (slots[n][0], getattr(slots[n][0].module, slots[n][0].attr)) for n in names if n in slots}
        return {n: module_tensor_values(slot.module, slot.attr, w).detach() for n, (slot, w) in found.items()}


class SparseDeltas:
    """Trainable deltas at fixed flat positions of named parameters of any `nn.Module`.

    `coordinates` maps plain HF parameter names to distinct flat (row-major) positions, (K,)
    int64 each. Until `detach()` or `merge()` the module computes base + delta. The base
    tensors are written only by `merge()` (for good) and `fold()` (undone exactly by `unfold()`).
    Freezing the base parameters is the caller's business.

    A parameter of a layer offloaded by a device map (a meta placeholder between forwards) is
    held on its layer's device while its delta is attached (`hold_in_memory`), so the delta,
    a fold and the backward pass see real values; detaching gives it back to its offload hook
    (with the merged values, after `merge()`).
    """

    def __init__(
        self,
        root: nn.Module,
        coordinates: Mapping[str, torch.Tensor],
        persistent_index: bool = False,
        slots: Mapping[str, list[_Slot]] | None = None,
    ):
        slots = module_slots(root) if slots is None else slots
        self.deltas: dict[str, SparseDelta] = {}
        self._slots: dict[str, list[_Slot]] = {}
        self._attached = True
        self._enabled = True
        self._folded: dict[str, torch.Tensor] | None = None  # the base values under the deltas while folded
        self._held: list[str] = []  # offloaded parameters held in memory while their deltas are attached
        try:
            for name, flat in coordinates.items():
                self._attach(name, flat, slots, persistent_index)
        except Exception:
            self.detach()
            raise

    def _attach(self, name: str, flat: torch.Tensor, slots: Mapping[str, list[_Slot]], persistent_index: bool) -> None:
        if name not in slots:
            raise InputError("mask", f"{name} is not a parameter of this model")
        if any(parametrize.is_parametrized(slot.module, slot.attr) for slot in slots[name]):
            raise InputError("mask", f"{name} already carries a delta; detach or merge it first")
        base = getattr(slots[name][0].module, slots[name][0].attr)
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= base.numel()):
            raise InputError("mask", f"the coordinates of {name} fall outside its shape {list(base.shape)}")
        self._slots[name] = list(slots[name])
        if base.device.type == "meta":
            base = hold_in_memory([(slot.module, slot.attr) for slot in slots[name]])
            self._held.append(name)
        delta = SparseDelta(flat, base, persistent_index)
        for slot in slots[name]:
            parametrize.register_parametrization(slot.module, slot.attr, delta)
        self.deltas[name] = delta

    @property
    def attached(self) -> bool:
        return self._attached

    @property
    def folded(self) -> bool:
        return self._folded is not None

    def parameters(self) -> list[nn.Parameter]:
        return [d.values for d in self.deltas.values()]

    @property
    def trainable(self) -> int:
        return sum(d.values.numel() for d in self.deltas.values())

    def set_enabled(self, enabled: bool) -> None:
        """Off: the module computes exactly the base weights (the deltas are kept)."""
        self._enabled = enabled
        for d in self.deltas.values():
            d.enabled = enabled and not self.folded  # folded: the base already holds base + delta

    def base(self, name: str) -> torch.Tensor:
        slot = self._slots[name][0]
        return getattr(slot.module.parametrizations, slot.attr).original

    def tuned(self, name: str) -> torch.Tensor:
        """base + delta, whether or not the deltas are enabled (not while folded)."""
        with torch.no_grad():
            return self.deltas[name].add_to(self.base(name))

    def changed(self) -> int:
        """Weight entries where base + delta differs from the base (a delta can round away in bf16)."""
        return sum(int((self.tuned(n) != self.base(n)).sum()) for n in self.deltas)

    @contextmanager
    def lean_backward(self) -> Iterator[None]:
        """Keep no dense copy of a tuned weight for the backward pass: recompute base + delta there.

        A Linear saves its weight for the backward pass; with a parametrization that weight is
        a fresh base + delta copy per tuned matrix, which would make the sparse run hold more
        memory than LoRA. Inside this context, when autograd saves that copy (or a view of it,
        such as the transpose a matmul keeps), it keeps a recipe instead (base, delta, view
        geometry) and rebuilds the copy when the backward pass needs it. Run forward and
        backward inside one context, and step the optimizer after it.
        """
        made: dict[int, tuple[weakref.ref, SparseDelta, torch.Tensor]] = {}

        def pack(t: torch.Tensor):
            entry = made.get(t.untyped_storage().data_ptr()) if t.layout == torch.strided else None
            # the copy is alive while a module saves it, so its storage cannot belong to another tensor
            if entry is None or entry[0]() is None or entry[0]().untyped_storage().data_ptr() != t.untyped_storage().data_ptr():
                return t
            return (entry[1], entry[2], t.size(), t.stride(), t.storage_offset())

        def unpack(packed):
            if not isinstance(packed, tuple):
                return packed
            delta, base, size, stride, offset = packed
            with torch.no_grad():
                return delta.add_to(base).as_strided(size, stride, offset)

        for d in self.deltas.values():
            d.made = made
        try:
            with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
                yield
        finally:
            for d in self.deltas.values():
                d.made = None
            made.clear()

    def tensors(self) -> dict[str, torch.Tensor]:
        """`NAME.index` (K,) int64 flat positions and `NAME.values` (K,) floats, on the CPU."""
        found = {}
        for name, d in self.deltas.items():
            found[f"{name}.index"] = d.flat_index.detach().cpu().contiguous()
            found[f"{name}.values"] = d.values.detach().cpu().contiguous()
        return found

    def load_tensors(self, tensors: Mapping[str, torch.Tensor], source: str) -> None:
        """Set the values from `tensors` (as `tensors()` gives them) for the same coordinates."""
        for name, d in self.deltas.items():
            index, values = tensors.get(f"{name}.index"), tensors.get(f"{name}.values")
            if index is None or values is None or not torch.equal(index, d.flat_index.cpu()):
                raise InputError("deltas", f"{source} holds no deltas for {name} at this mask's coordinates")
            if values.shape != d.values.shape or not values.dtype.is_floating_point:
                raise InputError("deltas", f"{source} holds {list(values.shape)} {values.dtype} values for {name}, not {d.values.numel()} floats")
            with torch.no_grad():
                d.values.copy_(values)

    def fold(self) -> None:
        """Write base + delta into the base tensors and switch the deltas off; `unfold` undoes it exactly."""
        if self.folded:
            return
        with torch.no_grad():
            self._folded = {}
            for name, d in self.deltas.items():
                base = self.base(name).view(-1)  # (numel,)
                self._folded[name] = base[d.flat_index].clone()  # (K,)
                base.index_add_(0, d.flat_index, d.values.to(base.dtype))
        self.set_enabled(self._enabled)

    def unfold(self) -> None:
        """Put back the base values `fold` overwrote (bit for bit) and switch the deltas on again."""
        if not self.folded:
            return
        with torch.no_grad():
            for name, d in self.deltas.items():
                self.base(name).view(-1)[d.flat_index] = self._folded[name]
        self._folded = None
        self.set_enabled(self._enabled)

    def detach(self) -> None:
        """Remove the deltas; the base tensors are back in place, untouched."""
        self.unfold()
        self._remove(merged=False)

    def merge(self) -> None:
        """Write base + delta into the base tensors for good, and remove the deltas."""
        self.fold()
        self._folded = None  # nothing to put back: removing the deltas now leaves base + delta
        self._remove(merged=True)

    def _remove(self, merged: bool) -> None:
        if not self._attached:
            return
        for name, slots in self._slots.items():
            for slot in slots:
                if parametrize.is_parametrized(slot.module, slot.attr):  # an attach that failed midway did not get there
                    parametrize.remove_parametrizations(slot.module, slot.attr, leave_parametrized=False)
            if name in self._held:
                give_back([(slot.module, slot.attr) for slot in slots], keep_values=merged)
        self._attached = False


def save_deltas(path: str | Path, deltas: SparseDeltas, mask: SelectionMask) -> Path:
    """Deltas as safetensors: `NAME.index` (K,) flat positions and `NAME.values` (K,) float32."""
    from safetensors.torch import save_file

    shapes = {name: list(mask.shapes[name]) for name in deltas.deltas}
    path = Path(path)
    save_file(deltas.tensors(), str(path), metadata={"format": DELTAS_FORMAT, "shapes": json.dumps(shapes), "mask": mask.name})
    return path


def read_deltas(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a file written by `save_deltas`; InputError (field `deltas`) for anything else."""
    return read_tuned_file(path, DELTAS_FORMAT, "sparse deltas")[1]


class SparseTuner:
    """Attach a mask's trainable deltas to a bridged model; detach (base restored exactly) or merge.

    Use as a context manager, or call `detach()`: until then the model computes base + delta.
    """

    def __init__(self, model: LoadedModel, mask: SelectionMask):
        mask.validate(model)
        if mask.count == 0:
            raise InputError("mask", "selects no coordinates")
        self.model = model
        self.mask = mask
        self.core = SparseDeltas(model.hf_model, mask.coordinates)
        model_changed(model)

    def __enter__(self) -> SparseTuner:
        return self

    def __exit__(self, *exc) -> None:
        self.detach()

    @property
    def deltas(self) -> dict[str, SparseDelta]:
        return self.core.deltas

    def parameters(self) -> list[nn.Parameter]:
        return self.core.parameters()

    @property
    def trainable(self) -> int:
        return self.core.trainable

    def set_enabled(self, enabled: bool) -> None:
        """Off: the model computes exactly the base weights (the deltas are kept)."""
        self.core.set_enabled(enabled)
        model_changed(self.model)  # a flag: no parameter's version counter sees it

    def base(self, name: str) -> torch.Tensor:
        return self.core.base(name)

    def lean_backward(self):
        """`SparseDeltas.lean_backward`: no dense copy of a tuned weight kept for the backward pass."""
        return self.core.lean_backward()

    def tuned(self, name: str) -> torch.Tensor:
        """base + delta, whether or not the deltas are enabled."""
        return self.core.tuned(name)

    def changed(self) -> int:
        """Weight entries where base + delta differs from the base (a delta can round away in bf16)."""
        return self.core.changed()

    def save(self, path: str | Path) -> Path:
        """Deltas as safetensors: `NAME.index` (K,) flat positions and `NAME.values` (K,) float32."""
        return save_deltas(path, self.core, self.mask)

    def load_values(self, path: str | Path) -> None:
        """Set the deltas from a file written by `save` for the same mask."""
        self.core.load_tensors(read_deltas(path), Path(path).name)

    def detach(self) -> None:
        """Remove the deltas; the base tensors are back in place, untouched."""
        if not self.core.attached:
            return
        self.core.detach()
        model_changed(self.model)

    def merge(self) -> None:
        """Write base + delta into the base tensors for good, and remove the deltas."""
        self.core.merge()
        model_changed(self.model)


def apply_deltas(model: LoadedModel, mask: SelectionMask, path: str | Path) -> SparseTuner:
    """Re-attach a run's saved deltas to the base model (detach or merge the returned tuner)."""
    tuner = SparseTuner(model, mask)
    try:
        tuner.load_values(path)
    except Exception:
        tuner.detach()
        raise
    return tuner
