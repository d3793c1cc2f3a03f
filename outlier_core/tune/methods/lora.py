"""lora: Hugging Face peft LoRA on the same underlying model, in the projections the mask
touches, its rank chosen so its trainable count is closest to the mask's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from outlier_core.errors import InputError
from outlier_core.load.model_cache import model_changed
from outlier_core.load.models import LoadedModel, unbridged
from outlier_core.select.masks import SelectionMask, model_shapes
from outlier_core.tune.methods.base import Attached, TuningMethod
from outlier_core.tune.train_data import TrainConfig
from outlier_core.tune.tuned_files import read_tuned_file

ADAPTER = "default"
LORA_FORMAT = "outlier-lab-lora/1"
DEFAULT_LORA_TARGETS = ("self_attn.q_proj", "self_attn.v_proj")  # peft's own default for Llama


def linear_modules(model: LoadedModel) -> dict[str, str]:
    """Plain HF module name -> its name in the bridged model, for every projection (not the LM head)."""
    vocab = model.d_vocab
    found = {}
    for full_name, module in model.hf_model.named_modules():
        if type(module) is nn.Linear and vocab not in module.weight.shape:
            found[unbridged(full_name)] = full_name
    return found


def lora_targets(model: LoadedModel, mask: SelectionMask) -> list[str]:
    """The projections the mask touches, most selected coordinates first (LoRA in the same
    places); peft's default q/v projections when it touches none."""
    modules = linear_modules(model)
    counts = mask.counts()
    touched = [name.removesuffix(".weight") for name in counts if name.removesuffix(".weight") in modules]
    if touched:
        return sorted(touched, key=lambda t: (-counts[f"{t}.weight"], t))
    return sorted(name for name in modules if name.endswith(DEFAULT_LORA_TARGETS))


def lora_rank_for(budget: int, model: LoadedModel, targets: list[str]) -> int:
    """The rank r >= 1 whose count r × Σ(in + out) over the targets is closest to `budget`."""
    per_rank = _per_rank(model, targets)
    low = max(1, budget // per_rank)
    return min((low, low + 1), key=lambda r: (abs(r * per_rank - budget), r))


def lora_plan(model: LoadedModel, mask: SelectionMask) -> tuple[list[str], int]:
    """(targets, rank) whose trainable count is closest to the mask's.

    The rank comes first; when even rank 1 on every touched projection exceeds the mask's
    count, LoRA keeps the leading targets (those holding most of the mask) whose rank-1
    count is closest to it.
    """
    targets = lora_targets(model, mask)
    if _per_rank(model, targets) <= mask.count:
        return targets, lora_rank_for(mask.count, model, targets)
    costs = [_per_rank(model, targets[: n + 1]) for n in range(len(targets))]
    n = min(range(len(targets)), key=lambda i: (abs(costs[i] - mask.count), i))
    return targets[: n + 1], 1


def _per_rank(model: LoadedModel, targets: list[str]) -> int:
    shapes, _ = model_shapes(model)
    return sum(sum(shapes[f"{t}.weight"]) for t in targets)  # (out + in) per target


class LoraTuning:
    """peft LoRA injected in place into the bridged HF model (no PeftModel wrapper)."""

    def __init__(self, model: LoadedModel, targets: list[str], rank: int, alpha: float | None = None):
        from peft import LoraConfig, inject_adapter_in_model
        from peft.tuners.lora import LoraLayer

        modules = linear_modules(model)
        self.model = model
        self.targets = targets
        self.rank = rank
        self.alpha = float(alpha if alpha is not None else 2 * rank)
        config = LoraConfig(r=rank, lora_alpha=self.alpha, lora_dropout=0.0, target_modules=[modules[t] for t in targets])
        inject_adapter_in_model(config, model.hf_model, adapter_name=ADAPTER)
        self.layers: dict[str, LoraLayer] = {
            unbridged(full_name): module
            for full_name, module in model.hf_model.named_modules()
            if isinstance(module, LoraLayer)
        }
        self._parents = {name: full_name for name, full_name in modules.items() if name in self.layers}
        model_changed(model)

    @classmethod
    def from_file(cls, model: LoadedModel, path: str | Path) -> LoraTuning:
        """The LoRA a file written by `save` holds, attached to `model` (it must have the same projections)."""
        path = Path(path)
        meta, tensors = read_tuned_file(path, LORA_FORMAT, "LoRA factors")
        try:
            rank, alpha, targets = int(meta["rank"]), float(meta["alpha"]), json.loads(meta["targets"])
        except (KeyError, ValueError, TypeError) as err:
            raise InputError("deltas", f"{path.name} lacks a readable rank, alpha or targets entry ({err})") from err
        modules = linear_modules(model)
        if not isinstance(targets, list) or not targets or rank < 1:
            raise InputError("deltas", f"{path.name} names no target projections, or a rank below 1")
        missing = [t for t in targets if t not in modules]
        if missing:
            raise InputError("deltas", f"{path.name} holds LoRA factors for {missing[0]}, which {model.name} does not have")
        shapes, _ = model_shapes(model)
        expected = {}
        for target in targets:
            out_features, in_features = shapes[f"{target}.weight"]
            expected[f"{target}.lora_A"] = (rank, in_features)
            expected[f"{target}.lora_B"] = (out_features, rank)
        found = {key: tuple(t.shape) for key, t in tensors.items()}
        if found != expected:
            wrong = sorted(set(found) ^ set(expected)) or sorted(k for k in expected if found[k] != expected[k])
            raise InputError("deltas", f"{path.name} does not hold rank-{rank} factors of {model.name}'s projections ({wrong[0]} differs)")
        tuning = cls(model, targets, rank, alpha)
        with torch.no_grad():
            for name, layer in tuning.layers.items():
                layer.lora_A[ADAPTER].weight.copy_(tensors[f"{name}.lora_A"])  # (r, in)
                layer.lora_B[ADAPTER].weight.copy_(tensors[f"{name}.lora_B"])  # (out, r)
        return tuning

    def parameters(self) -> list[nn.Parameter]:
        return [p for layer in self.layers.values() for p in (layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight)]

    @property
    def trainable(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def set_enabled(self, enabled: bool) -> None:
        for layer in self.layers.values():
            layer.enable_adapters(enabled)
        model_changed(self.model)

    def changed(self) -> int:
        """Entries where base + B·A·scale (what merging would write) differs from the base."""
        with torch.no_grad():
            total = 0
            for layer in self.layers.values():
                base = layer.get_base_layer().weight
                total += int(((base + layer.get_delta_weight(ADAPTER).to(base.dtype)) != base).sum())
            return total

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        tensors = {}
        for name, layer in self.layers.items():
            tensors[f"{name}.lora_A"] = layer.lora_A[ADAPTER].weight.detach().cpu().contiguous()  # (r, in)
            tensors[f"{name}.lora_B"] = layer.lora_B[ADAPTER].weight.detach().cpu().contiguous()  # (out, r)
        meta = {"format": LORA_FORMAT, "rank": str(self.rank), "alpha": str(self.alpha), "targets": json.dumps(self.targets)}
        save_file(tensors, str(path), metadata=meta)
        return Path(path)

    def merge(self) -> None:
        """Write base + B·A·scale into each base weight for good (peft's merge), then put the Linears back."""
        self.set_enabled(True)
        for layer in self.layers.values():
            layer.merge(adapter_names=[ADAPTER])
        self.detach()

    def detach(self) -> None:
        """Put each original Linear back where peft put its LoRA layer."""
        put_back_base_layers(self.model, self.layers.values())
        self.layers = {}


def put_back_base_layers(model: LoadedModel, layers: Iterable[nn.Module]) -> None:
    """Put each original Linear back where peft injected one of `layers` (LoRA, SHiRA) around it."""
    injected = list(layers)
    for full_name, module in list(model.hf_model.named_modules()):
        if module in injected:
            parent, child = full_name.rsplit(".", 1)
            setattr(model.hf_model.get_submodule(parent), child, module.get_base_layer())
    vars(model.hf_model).pop("peft_config", None)  # the injection's note of the adapter: a later one would warn
    model_changed(model)


class LoraMethod(TuningMethod):
    name = "lora"

    def attach(self, model: LoadedModel, mask: SelectionMask, config: TrainConfig) -> Attached:
        targets, rank = (lora_targets(model, mask), config.lora_rank) if config.lora_rank else lora_plan(model, mask)
        torch.manual_seed(config.seed)  # peft draws A at random
        return Attached(f"lora_r{rank}", LoraTuning(model, targets, rank), {"lora_rank": rank, "lora_targets": targets})

    def load(self, model: LoadedModel, folder: Path, deltas: Path) -> LoraTuning:
        return LoraTuning.from_file(model, deltas)


METHOD = LoraMethod()
