"""shira: Hugging Face peft SHiRA (`ShiraConfig`), a sparse high-rank adapter at LoRA's count.

SHiRA trains r·(m + n) entries of each targeted m×n Linear, as many as LoRA at rank r,
chosen by a mask function; peft's own is random (seeded here by the run's seed). It goes
where LoRA goes (`lora.lora_plan`: the projections the mask touches, r the rank whose count
is closest to the mask's), so both sit at the same budget.

Our mask through SHiRA's `mask_fn` (`outlier_mask_fn`): peft needs one r for the whole
config and exactly r·(m + n) ones in every targeted Linear, so an outlier mask fits only
when every projection it touches holds that many of its coordinates for one r and it holds
no norm entries (`shira_rank_of` says which r, or None). The rules' masks — whole rows and
columns, a few super-weight entries, norm entries — almost never do; the mask method trains
any of them through our own sparse deltas instead. So the `shira` method (a baseline, a
sweep's method) always trains peft's own random mask; `outlier_mask_fn` serves a mask that
does fit, and saved runs load back through the same `mask_fn` route, with the indices
they trained.

peft's SHiRA forward reads the base weight and skips hooks on the base Linear (peft warns);
the bridge's hook points sit on the wrapper around it, so they keep firing here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from outlier_core.errors import InputError
from outlier_core.load.model_cache import model_changed
from outlier_core.load.models import LoadedModel, unbridged
from outlier_core.select.masks import SelectionMask, model_shapes
from outlier_core.tune.methods.base import Attached, TuningMethod
from outlier_core.tune.methods.lora import (
    linear_modules,
    lora_plan,
    put_back_base_layers,
)
from outlier_core.tune.train_data import TrainConfig
from outlier_core.tune.tuned_files import read_tuned_file

ADAPTER = "default"
SHIRA_FORMAT = "outlier-lab-shira/1"
MaskFn = Callable[..., torch.Tensor]  # peft's contract: (base_layer, r, **kwargs) -> binary (out, in) mask


def positions_mask_fn(positions: dict[str, torch.Tensor], layer_names: dict[int, str]) -> MaskFn:
    """A SHiRA `mask_fn` with ones at the given flat positions (K,) of each layer, named by
    plain HF name; `layer_names` maps id(base Linear) -> that name. peft checks the count."""

    def mask_fn(base_layer: nn.Linear, r: int, **kwargs) -> torch.Tensor:
        weight = base_layer.weight  # (out, in)
        mask = torch.zeros(weight.numel(), dtype=weight.dtype, device=weight.device)
        mask[positions[layer_names[id(base_layer)]].to(weight.device)] = 1
        return mask.view_as(weight)

    return mask_fn


def shira_rank_of(mask: SelectionMask) -> int | None:
    """The r for which every parameter the mask touches is a Linear holding r·(out + in) of
    its coordinates, or None when no one r fits (then SHiRA cannot take this mask)."""
    ranks = set()
    for name, count in mask.counts().items():
        shape = mask.shapes[name]
        if len(shape) != 2 or count % sum(shape):
            return None
        ranks.add(count // sum(shape))
    return ranks.pop() if len(ranks) == 1 else None


def outlier_mask_fn(model: LoadedModel, mask: SelectionMask) -> tuple[MaskFn, int, list[str]]:
    """(mask_fn, r, targets) that make SHiRA train exactly `mask`'s coordinates; InputError
    when the mask does not fit SHiRA's count (see the module's doc)."""
    rank = shira_rank_of(mask)
    if rank is None:
        raise InputError("mask", "SHiRA needs exactly r·(out + in) coordinates in every projection the mask touches, for one r, and no norm entries")
    modules = linear_modules(model)
    targets = [name.removesuffix(".weight") for name in mask.counts()]
    missing = [t for t in targets if t not in modules]
    if missing:
        raise InputError("mask", f"{missing[0]} is not a projection SHiRA can adapt")
    positions = {t: mask.coordinates[f"{t}.weight"] for t in targets}
    return positions_mask_fn(positions, _layer_names(model, targets)), rank, targets


def _layer_names(model: LoadedModel, targets: list[str]) -> dict[int, str]:
    modules = linear_modules(model)
    return {id(model.hf_model.get_submodule(modules[t])): t for t in targets}


class ShiraTuning:
    """peft SHiRA injected in place into the bridged HF model (no PeftModel wrapper)."""

    def __init__(self, model: LoadedModel, targets: list[str], rank: int, seed: int | None = None, mask_fn: MaskFn | None = None):
        from peft import ShiraConfig, inject_adapter_in_model
        from peft.tuners.shira import ShiraLayer

        modules = linear_modules(model)
        self.model, self.targets, self.rank = model, targets, rank
        config = ShiraConfig(r=rank, random_seed=seed, target_modules=[modules[t] for t in targets])
        if mask_fn is not None:
            config.mask_fn = mask_fn
        inject_adapter_in_model(config, model.hf_model, adapter_name=ADAPTER)
        self.layers: dict[str, ShiraLayer] = {
            unbridged(full_name): module for full_name, module in model.hf_model.named_modules() if isinstance(module, ShiraLayer)
        }
        model_changed(model)

    @classmethod
    def from_file(cls, model: LoadedModel, path: str | Path) -> ShiraTuning:
        """The SHiRA a file written by `save` holds, attached to `model` through a mask_fn of its indices."""
        path = Path(path)
        meta, tensors = read_tuned_file(path, SHIRA_FORMAT, "SHiRA values")
        try:
            rank, targets = int(meta["rank"]), json.loads(meta["targets"])
        except (KeyError, ValueError, TypeError) as err:
            raise InputError("deltas", f"{path.name} lacks a readable rank or targets entry ({err})") from err
        modules = linear_modules(model)
        missing = [t for t in targets if t not in modules] if isinstance(targets, list) else ["targets"]
        if missing or not targets or rank < 1:
            raise InputError("deltas", f"{path.name} names targets {model.name} does not have, or a rank below 1")
        shapes, _ = model_shapes(model)
        for t in targets:
            out_features, in_features = shapes[f"{t}.weight"]
            index, values = tensors.get(f"{t}.shira_indices"), tensors.get(f"{t}.shira_weight")
            size = rank * (out_features + in_features)
            if index is None or values is None or tuple(values.shape) != (size,) or tuple(index.shape) != (2, size):
                raise InputError("deltas", f"{path.name} does not hold {size} SHiRA entries for {t}")
        positions = {t: tensors[f"{t}.shira_indices"][0].long() * shapes[f"{t}.weight"][1] + tensors[f"{t}.shira_indices"][1].long() for t in targets}
        tuning = cls(model, targets, rank, mask_fn=positions_mask_fn(positions, _layer_names(model, targets)))
        with torch.no_grad():
            for name, layer in tuning.layers.items():
                layer.shira_weight[ADAPTER].copy_(tensors[f"{name}.shira_weight"])
        return tuning

    def parameters(self) -> list[nn.Parameter]:
        return [layer.shira_weight[ADAPTER] for layer in self.layers.values()]

    @property
    def trainable(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def set_enabled(self, enabled: bool) -> None:
        for layer in self.layers.values():
            layer.enable_adapters(enabled)
        model_changed(self.model)

    def changed(self) -> int:
        """Entries where base + the sparse delta (what merging would write) differs from the base."""
        with torch.no_grad():
            total = 0
            for layer in self.layers.values():
                base = layer.get_base_layer().weight
                total += int(((base + layer.get_delta_weight(ADAPTER).to_dense().to(base.dtype)) != base).sum())
            return total

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        tensors = {}
        for name, layer in self.layers.items():
            tensors[f"{name}.shira_weight"] = layer.shira_weight[ADAPTER].detach().cpu().contiguous()  # (K,)
            tensors[f"{name}.shira_indices"] = layer.shira_indices[ADAPTER].detach().cpu().to(torch.int64).contiguous()  # (2, K): row, column
        save_file(tensors, str(path), metadata={"format": SHIRA_FORMAT, "rank": str(self.rank), "targets": json.dumps(self.targets)})
        return Path(path)

    def merge(self) -> None:
        """Write base + the sparse delta into each base weight for good (peft's merge), then put the Linears back."""
        self.set_enabled(True)
        for layer in self.layers.values():
            layer.merge(adapter_names=[ADAPTER])
        self.detach()

    def detach(self) -> None:
        """Put each original Linear back where peft put its SHiRA layer."""
        put_back_base_layers(self.model, self.layers.values())
        self.layers = {}


class ShiraMethod(TuningMethod):
    name = "shira"

    def attach(self, model: LoadedModel, mask: SelectionMask, config: TrainConfig) -> Attached:
        targets, rank = lora_plan(model, mask)
        tuning = ShiraTuning(model, targets, rank, seed=config.seed)
        return Attached(f"shira_r{rank}", tuning, {"shira_rank": rank, "shira_targets": targets})

    def load(self, model: LoadedModel, folder: Path, deltas: Path) -> ShiraTuning:
        return ShiraTuning.from_file(model, deltas)


METHOD = ShiraMethod()
