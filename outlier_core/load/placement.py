"""A model spread over devices: accelerate's device map, and the weights of offloaded layers.

A `Placement` says where the layers go ("auto", "balanced", "sequential" or an explicit
map from module names to devices, with an optional memory budget per device).
Checkpoints read from files are placed as they load (`from_pretrained(device_map=...)`);
a model built in code is dispatched afterwards (`dispatch`). Every layer then runs on its
own device and accelerate's hooks move activations between them, so a hook sees its
tensor on the device of the layer that made it.

A layer offloaded to the CPU or disk keeps its parameters on the meta device and loads
them before each forward. `parameter_values` reads such a parameter's values, and
`writable_values` makes an in-place change reach the forwards that follow (the offload
loader prefers a tensor it holds in its state dict over the file). `hold_in_memory` keeps one
on its execution device while a sparse delta sits on it (see tune/sparse.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from outlier_core.errors import InputError

DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


@dataclass(frozen=True)
class Placement:
    device_map: str | dict[str, int | str]  # a strategy, or module name -> device (0, "cuda:1", "cpu", "disk")
    max_memory: dict[int | str, int | str] | None = None  # device -> budget ("70GiB"), for the strategies
    offload_folder: str | None = None  # where "disk" layers are written; a temporary folder when None

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"device_map": self.device_map}
        if self.max_memory is not None:
            kwargs["max_memory"] = self.max_memory
        if self.offload_folder is not None:
            kwargs["offload_folder"] = self.offload_folder
        return kwargs


def parse_device_map(text: str | None, max_memory: str | None = None, offload_folder: str | None = None) -> Placement | None:
    """A placement from settings: `text` a strategy name or a JSON object, `max_memory` a JSON object.

    JSON keys of `max_memory` that are digits name CUDA devices, as accelerate wants them.
    """
    if not text:
        return None
    if text in DEVICE_MAP_STRATEGIES:
        device_map: str | dict = text
    else:
        try:
            device_map = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError("device_map", f"{', '.join(DEVICE_MAP_STRATEGIES)} or a JSON object of module -> device; {err}") from err
        if not isinstance(device_map, dict) or not device_map:
            raise InputError("device_map", "a JSON device map is an object of module name -> device")
    budget = None
    if max_memory:
        try:
            raw = json.loads(max_memory)
        except json.JSONDecodeError as err:
            raise InputError("max_memory", f"a JSON object of device -> budget; {err}") from err
        if not isinstance(raw, dict):
            raise InputError("max_memory", "a JSON object of device -> budget, e.g. {\"0\": \"70GiB\", \"cpu\": \"200GiB\"}")
        budget = {int(k) if str(k).isdigit() else k: v for k, v in raw.items()}
    return Placement(device_map, budget, offload_folder)


def dispatch(hf: torch.nn.Module, placement: Placement) -> None:
    """Spread a model built in memory over the placement's devices (accelerate's dispatch_model)."""
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    device_map = placement.device_map
    if isinstance(device_map, str):
        no_split = getattr(hf, "_no_split_modules", None) or []
        budget = placement.max_memory
        if device_map != "sequential":
            budget = get_balanced_memory(hf, max_memory=budget, no_split_module_classes=no_split, low_zero=device_map == "balanced_low_0")
        device_map = infer_auto_device_map(hf, max_memory=budget, no_split_module_classes=no_split)
    offload = any(str(device) == "disk" for device in device_map.values())
    folder = placement.offload_folder
    if offload and folder is None:
        import tempfile

        folder = tempfile.mkdtemp(prefix="outlier-lab-offload-")
    dispatch_model(hf, device_map=device_map, offload_dir=folder)


def devices_of(hf: torch.nn.Module) -> tuple[str, ...]:
    """The devices a model's layers run on, as accelerate placed them (one entry when not dispatched)."""
    device_map = getattr(hf, "hf_device_map", None)
    if not device_map:
        return (str(next(hf.parameters()).device),)
    return tuple(dict.fromkeys(str(d) if not isinstance(d, int) else f"cuda:{d}" for d in device_map.values()))


def _owner(hf: torch.nn.Module, name: str, unbridged) -> tuple[torch.nn.Module, str]:
    """The module that holds parameter `name` (plain HF name) directly, and the parameter's local name."""
    owner_name, _, local = name.rpartition(".")
    for module_name, module in hf.named_modules():
        if unbridged(module_name) == owner_name and local in module._parameters:
            return module, local
    raise KeyError(name)


def _offload_hook(module: torch.nn.Module):
    """The accelerate hook that loads `module`'s offloaded parameters."""
    hook = getattr(module, "_hf_hook", None)
    for candidate in getattr(hook, "hooks", (hook,)):  # a SequentialHook holds several
        if getattr(candidate, "offload", False) and getattr(candidate, "weights_map", None) is not None:
            return candidate
    raise KeyError("no offload hook")


def _offload_source(module: torch.nn.Module):
    """(loader, key prefix) of the accelerate hook that loads `module`'s offloaded parameters."""
    weights = _offload_hook(module).weights_map
    return weights.dataset, weights.prefix


def module_tensor_values(module: torch.nn.Module, local: str, tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` (`module`'s own `local`): itself, or for an offloaded layer the copy its hook loads (on the CPU)."""
    if tensor.device.type != "meta":
        return tensor
    loader, prefix = _offload_source(module)
    return loader[prefix + local]


def parameter_values(hf: torch.nn.Module, name: str, parameter: torch.Tensor, unbridged) -> torch.Tensor:
    """`parameter`'s values: itself, or for an offloaded layer the copy its hook loads (on the CPU)."""
    if parameter.device.type != "meta":
        return parameter
    module, local = _owner(hf, name, unbridged)
    return module_tensor_values(module, local, parameter)


def hold_in_memory(holders: list[tuple[torch.nn.Module, str]]) -> torch.nn.Parameter:
    """Put an offloaded parameter's values on its layer's execution device, in every module that holds it.

    For as long as something else holds the tensor (a parametrization moves it out of the
    module's own parameters), the offload hook neither loads nor drops it, so changes to it
    (a fold) reach the forwards. `give_back` ends it.
    """
    module, local = holders[0]
    placeholder = module._parameters[local]
    device = _offload_hook(module).execution_device
    values = module_tensor_values(module, local, placeholder).detach().to(device, copy=True)
    held = torch.nn.Parameter(values, requires_grad=placeholder.requires_grad)
    for owner, attr in holders:
        owner._parameters[attr] = held
    return held


def give_back(holders: list[tuple[torch.nn.Module, str]], keep_values: bool) -> None:
    """Undo `hold_in_memory`: the meta placeholder again; `keep_values` puts the held values into
    the offload loader's state dict, where the hook reads them from for good (a merge)."""
    for module, local in holders:
        held = module._parameters[local]
        if keep_values:
            loader, prefix = _offload_source(module)
            loader.state_dict[prefix + local] = held.detach().cpu()
        module._parameters[local] = torch.nn.Parameter(held.detach().to("meta"), requires_grad=held.requires_grad)


@contextmanager
def writable_values(hf: torch.nn.Module, name: str, parameter: torch.Tensor, unbridged) -> Iterator[torch.Tensor]:
    """A tensor whose in-place changes the forwards inside the context compute with.

    A parameter on a real device is its own storage. An offloaded one gets a copy put into
    its loader's state dict for the context (a CPU-offloaded one is already there).
    """
    if parameter.device.type != "meta":
        yield parameter.data
        return
    module, local = _owner(hf, name, unbridged)
    loader, prefix = _offload_source(module)
    key = prefix + local
    held = key in loader.state_dict
    values = loader[key] if held else loader[key].clone()
    loader.state_dict[key] = values
    try:
        yield values
    finally:
        if not held:
            del loader.state_dict[key]
