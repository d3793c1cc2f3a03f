"""An exported selection mask as a peft method: train exactly its coordinates on a plain model.

    from peft import get_peft_model
    from outlier_core.tune.peft_mask import OutlierMaskConfig  # importing it registers the method with peft
    model = get_peft_model(model, OutlierMaskConfig(mask="masks/outliers.safetensors", task_type="CAUSAL_LM"))
    ...  # train (Trainer, TRL, a loop); model.save_pretrained(DIR); PeftModel.from_pretrained(base, DIR)
    merged = model.merge_and_unload()

Unlike SHiRA (peft's sparse method: exactly r·(m+n) entries per Linear, no norm weights), any
coordinate a mask selects is trained: Linear entries, rows and columns, norm-weight entries,
embedding rows. The state is the sparse core's (`sparse.SparseDeltas`): per parameter a values
vector (K,) at fixed flat positions (K,), added to the frozen weight through a parametrization
on every module that holds it (a tied embedding and LM head share one delta). Each module that
owns a selected parameter is wrapped in an `OutlierMaskLayer`, which is what peft's adapter
bookkeeping (status, enable/disable, merge, save) walks; its forward is the base module's own.

Adapter files: `adapter_config.json` (the mask's name, model, parameter count and per parameter
its shape and coordinate count) and `adapter_model.safetensors` holding, per parameter,
`base_model.model.<module>.outlier_mask_deltas.<attr>.values` (K,) float32 and `.flat_index` (K,)
int64 (row-major positions in the Hugging Face layout). Reloading needs no mask file.

A parameter carries one outlier-mask adapter at a time; adapters on different parameters mix.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from peft.config import PeftConfig
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer, check_adapters_to_merge
from peft.utils import PeftType, register_peft_method
from torch import nn

from outlier_core.errors import InputError
from outlier_core.select.masks import SelectionMask
from outlier_core.tune.attach import as_mask, module_shapes
from outlier_core.tune.sparse import SparseDeltas, module_slots

METHOD = "outlier_mask"  # peft's name for the method; its PeftType is OUTLIER_MASK
PREFIX = "outlier_mask_"
LAYER_ATTR = "outlier_mask_deltas"  # the adapter container on each wrapped module


def _peft_type(name: str) -> PeftType:
    """The PeftType member `name`, added if peft does not know it yet.

    peft's registration (`register_peft_method`) accepts only names that are members of its
    `PeftType` enum, and an enum cannot be extended by subclassing, so the member is added the
    way `enum` itself stores members.
    """
    if name in PeftType.__members__:
        return PeftType[name]
    member = str.__new__(PeftType, name)
    member._name_ = name
    member._value_ = name
    member._sort_order_ = len(PeftType._member_names_)
    type.__setattr__(PeftType, name, member)  # enum's own __setattr__ refuses to add members
    PeftType._member_map_[name] = member
    PeftType._value2member_map_[name] = member
    PeftType._member_names_.append(name)
    return member


OUTLIER_MASK = _peft_type(METHOD.upper())


def owner_module(parameter: str) -> str:
    """`model.layers.1.mlp.down_proj.weight` -> `model.layers.1.mlp.down_proj`."""
    module, dot, _ = parameter.rpartition(".")
    if not dot:
        raise InputError("mask", f"{parameter} sits on the model itself; peft can only wrap submodules")
    return module


@dataclass
class OutlierMaskConfig(PeftConfig):
    """Train exactly the coordinates of an Outlier Lab selection mask.

    Pass `mask` (MASK.json or MASK.safetensors, or a `SelectionMask`); the rest is filled from
    it. A saved adapter's config carries `parameters` and reloads without the mask file.
    """

    mask: str | None = field(default=None, metadata={"help": "MASK.json or MASK.safetensors from `outlier-lab mask suggest` (or a SelectionMask)"})
    mask_name: str | None = field(default=None, metadata={"help": "the mask's name (filled from the mask)"})
    mask_model: str | None = field(default=None, metadata={"help": "the model the mask was built for (filled from the mask)"})
    n_model_params: int | None = field(default=None, metadata={"help": "that model's parameter count, checked against the model adapted"})
    parameters: dict[str, dict[str, Any]] | None = field(
        default=None, metadata={"help": "per parameter (plain Hugging Face name): its shape and the number of coordinates trained"}
    )
    target_modules: list[str] | None = field(default=None, metadata={"help": "the modules that own those parameters (filled from the mask)"})
    modules_to_save: list[str] | None = field(default=None, metadata={"help": "modules trained in full and saved beside the adapter"})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = OUTLIER_MASK
        self.selection: SelectionMask | None = None  # not a field: the coordinates travel in the adapter's weights
        if isinstance(self.mask, SelectionMask) or (self.mask is not None and self.parameters is None):
            self._take_mask(as_mask(self.mask))
        if not self.parameters:
            raise InputError("mask", "OutlierMaskConfig needs a mask: a MASK.json or MASK.safetensors file, or a SelectionMask")
        self.target_modules = sorted({owner_module(name) for name in self.parameters})

    def _take_mask(self, selection: SelectionMask) -> None:
        if selection.count == 0:
            raise InputError("mask", "selects no coordinates")
        self.selection = selection
        self.mask = None if isinstance(self.mask, SelectionMask) else str(self.mask)
        self.mask_name, self.mask_model, self.n_model_params = selection.name, selection.model, selection.n_model_params
        self.parameters = {
            name: {"shape": list(selection.shapes[name]), "count": int(flat.numel())} for name, flat in selection.coordinates.items()
        }

    def coordinates(self) -> dict[str, torch.Tensor]:
        """Flat positions per parameter: the mask's, or zeros of the saved counts that loading overwrites."""
        if self.selection is not None:
            return dict(self.selection.coordinates)
        return {name: torch.zeros(int(spec["count"]), dtype=torch.int64) for name, spec in self.parameters.items()}


class OutlierMaskLayer(nn.Module, BaseTunerLayer):
    """A module whose parameters carry sparse deltas, per adapter; its forward is the base module's.

    The deltas are parametrizations of the base module's tensors (the sparse core attaches
    them); this layer keeps them per adapter where peft looks, and switches, merges and removes them.
    """

    adapter_layer_names = (LAYER_ATTR,)
    other_param_names = ()

    def __init__(self, base_layer: nn.Module, adapter_name: str, deltas: SparseDeltas, inference_mode: bool = False):
        super().__init__()
        # registered before base_layer: the values' first names (which peft's trainable and
        # saved parameters are chosen by) are the adapter's, not the parametrization's
        setattr(self, LAYER_ATTR, nn.ModuleDict())
        self.base_layer = base_layer
        self.attached: dict[str, SparseDeltas] = {}  # adapter -> the core's deltas on this module
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        self._active_adapter = adapter_name
        self.kwargs: dict = {}
        self.update_layer(adapter_name, deltas, inference_mode)

    def update_layer(self, adapter_name: str, deltas: SparseDeltas, inference_mode: bool = False) -> None:
        self.attached[adapter_name] = deltas
        getattr(self, LAYER_ATTR)[adapter_name] = nn.ModuleDict({name.rpartition(".")[2]: d for name, d in deltas.deltas.items()})
        self.set_adapter(self.active_adapters, inference_mode=inference_mode)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.base_layer(*args, **kwargs)

    def set_adapter(self, adapter_names: str | list[str], inference_mode: bool = False) -> None:
        super().set_adapter(adapter_names, inference_mode=inference_mode)
        self._switch()

    def enable_adapters(self, enabled: bool) -> None:
        super().enable_adapters(enabled)
        self._switch()

    def _switch(self) -> None:
        """The deltas of the active adapters on, all others off (unless adapters are disabled)."""
        for name, deltas in self.attached.items():
            deltas.set_enabled(not self.disable_adapters and name in self.active_adapters)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Write base + delta into the base weights; `unmerge` puts the base values back exactly."""
        for name in check_adapters_to_merge(self, adapter_names):
            if name not in self.attached:
                continue
            deltas = self.attached[name]
            deltas.fold()
            if safe_merge and not all(torch.isfinite(deltas.base(p)).all() for p in deltas.deltas):
                deltas.unfold()
                raise ValueError(f"NaNs detected in the merged weights. The adapter {name} seems to be broken")
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.")
            return
        while self.merged_adapters:
            self.attached[self.merged_adapters.pop()].unfold()

    def unload_and_optionally_merge_module(self, merge: bool, safe_merge: bool, adapter_names: list[str] | None) -> nn.Module:
        """Remove every adapter (merged ones leave base + delta in the weights) and return the base module."""
        if merge:
            self.merge(safe_merge=safe_merge, adapter_names=adapter_names)
        for name, deltas in self.attached.items():
            if name in self.merged_adapters:
                deltas.merge()
            else:
                deltas.detach()
        self.attached.clear()
        return self.base_layer

    def delete_adapter(self, adapter_name: str) -> None:
        deltas = self.attached.pop(adapter_name, None)
        if deltas is not None:
            deltas.detach()
        super().delete_adapter(adapter_name)

    def __repr__(self) -> str:
        return f"{METHOD}.{super().__repr__()}"


class OutlierMaskModel(BaseTuner):
    """The peft tuner: wraps each module that owns a masked parameter in an `OutlierMaskLayer`."""

    prefix: str = PREFIX
    tuner_layer_cls = OutlierMaskLayer
    target_module_mapping: ClassVar[dict[str, list[str]]] = {}  # the targets come from the mask, never from the architecture

    def inject_adapter(self, model: nn.Module, adapter_name: str, autocast_adapter_dtype: bool = True, low_cpu_mem_usage: bool = False, state_dict=None) -> None:
        if low_cpu_mem_usage:
            raise ValueError(f"{METHOD} adapters are built on the base weights' device; leave low_cpu_mem_usage off")
        config = self.peft_config[adapter_name]
        _check_fits(model, config)
        self._slots = module_slots(model)  # read once: a tied tensor's slots include modules not wrapped
        self._coordinates = config.coordinates()
        try:
            super().inject_adapter(model, adapter_name, autocast_adapter_dtype=autocast_adapter_dtype, low_cpu_mem_usage=False, state_dict=state_dict)
        finally:
            del self._slots, self._coordinates

    def _prepare_adapter_config(self, peft_config: PeftConfig, model_config: dict) -> PeftConfig:
        return peft_config

    @staticmethod
    def _check_target_module_exists(peft_config: PeftConfig, key: str) -> bool:
        return key in peft_config.target_modules

    def _check_tied_modules(self, model: nn.Module, peft_config: PeftConfig) -> None:
        """Nothing to warn about: a tied tensor carries one delta, attached on every module that holds it."""

    def _check_merge_allowed(self) -> None:
        """Merging a tied tensor writes it once; the embedding and LM head stay tied."""

    def _create_and_replace(self, peft_config, adapter_name, target, target_name, parent, current_key, **kwargs) -> None:
        coordinates = {name: flat for name, flat in self._coordinates.items() if owner_module(name) == current_key}
        deltas = SparseDeltas(self.model, coordinates, persistent_index=True, slots=self._slots)
        if isinstance(target, OutlierMaskLayer):
            target.update_layer(adapter_name, deltas, inference_mode=peft_config.inference_mode)
            return
        layer = OutlierMaskLayer(target, adapter_name, deltas, inference_mode=peft_config.inference_mode)
        if adapter_name not in self.active_adapters:
            layer.requires_grad_(False)
        self._replace_module(parent, target_name, layer, target)

    @classmethod
    def _remove_adapter_name_from_key(cls, key: str, adapter_name: str) -> str:
        # `<module>.outlier_mask_deltas.<adapter>.<attr>.values` -> `<module>.outlier_mask_deltas.<attr>.values`
        return key.replace(f".{LAYER_ATTR}.{adapter_name}.", f".{LAYER_ATTR}.")


def _check_fits(model: nn.Module, config: OutlierMaskConfig) -> None:
    """The model has the parameter count of the mask's model and every masked parameter's shape."""
    shapes, total = module_shapes(model)
    if config.n_model_params is not None and total != config.n_model_params:
        raise InputError(
            "mask.model",
            f"the mask was built for {config.mask_model} ({config.n_model_params:,} parameters) but this model has {total:,} parameters",
        )
    for name, spec in config.parameters.items():
        if name not in shapes:
            raise InputError("mask.parameters", f"{name} is not a parameter of this model")
        if list(shapes[name]) != list(spec["shape"]):
            raise InputError("mask.model", f"{name} has shape {list(shapes[name])} here but {list(spec['shape'])} in the mask")


def adapter_key(parameter: str, tensor: str) -> str:
    """Where a saved adapter keeps one parameter's `values` or `flat_index`."""
    module, _, attr = parameter.rpartition(".")
    return f"base_model.model.{module}.{LAYER_ATTR}.{attr}.{tensor}"


if OUTLIER_MASK not in PEFT_TYPE_TO_CONFIG_MAPPING:  # importing this module twice registers once
    register_peft_method(name=METHOD, config_cls=OutlierMaskConfig, model_cls=OutlierMaskModel, prefix=PREFIX)
