"""A workbench run's sparse deltas as a peft adapter folder (the `outlier_mask` method).

A coordinate run (mask, random, ln) leaves FOLDER/<method>/mask.safetensors and its trained
deltas.safetensors (`NAME.index`, `NAME.values`). The adapter folder holds the same numbers
under peft's names, so `PeftModel.from_pretrained(model, OUT)` on the plain base model computes
what the workbench computed with the run applied. No model is loaded to write it.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from outlier_core.errors import InputError
from outlier_core.select.mask_files import load_mask
from outlier_core.select.masks import SelectionMask
from outlier_core.tune.peft_mask import OutlierMaskConfig, adapter_key
from outlier_core.tune.sparse import read_deltas

ADAPTER_WEIGHTS = "adapter_model.safetensors"  # peft's file name; its config goes to adapter_config.json
METHOD_NAME = re.compile(r"[a-z][a-z0-9_]*")  # a method's folder inside a run, never a path


def adapter_tensors(mask: SelectionMask, deltas: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """peft's keys for a deltas file's `NAME.index` / `NAME.values`, checked against the mask's coordinates."""
    tensors = {}
    for name, flat in mask.coordinates.items():
        index, values = deltas.get(f"{name}.index"), deltas.get(f"{name}.values")
        if index is None or values is None or not torch.equal(index, flat):
            raise InputError("deltas", f"{source} holds no deltas for {name} at the mask's coordinates")
        if values.shape != flat.shape or not values.dtype.is_floating_point:
            raise InputError("deltas", f"{source} holds {list(values.shape)} {values.dtype} values for {name}, not {flat.numel()} floats")
        tensors[adapter_key(name, "values")] = values.contiguous()
        tensors[adapter_key(name, "flat_index")] = index.contiguous()
    return tensors


def export_run(folder: str | Path, method: str, out: str | Path) -> tuple[Path, SelectionMask]:
    """Write OUT/adapter_config.json and OUT/adapter_model.safetensors for one coordinate run.

    Raises InputError naming `run` (not a run folder), `method` (no such run, or one whose
    deltas are not sparse: LoRA and full runs) or `deltas` (files that do not match).
    """
    from safetensors.torch import save_file

    folder, out = Path(folder), Path(out)
    if not (folder / "comparison.json").is_file():
        raise InputError("run", f"{folder} holds no comparison.json: it is not a fine-tune run")
    if not isinstance(method, str) or not METHOD_NAME.fullmatch(method):
        raise InputError("method", f"{method!r} is not a method name")
    part = folder / method
    if not (part / "deltas.safetensors").is_file():
        raise InputError("method", f"{folder.name} has no saved {method} deltas")
    if not (part / "mask.safetensors").is_file():
        raise InputError("method", f"the {method} run of {folder.name} trained no mask's coordinates (only mask, random and ln runs export)")
    mask = load_mask(part / "mask.safetensors")
    deltas = read_deltas(part / "deltas.safetensors")
    tensors = adapter_tensors(mask, deltas, f"{folder.name}/{method}/deltas.safetensors")
    config = OutlierMaskConfig(mask=mask, task_type="CAUSAL_LM", inference_mode=True)
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(out))
    save_file(tensors, str(out / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    return out, mask
