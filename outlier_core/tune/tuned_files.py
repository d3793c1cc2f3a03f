"""Reading back the safetensors files tunings save (sparse deltas, LoRA factors, SHiRA values,
full weights): one format check and one error field, `deltas`, for all of them."""

from __future__ import annotations

from pathlib import Path

import torch

from outlier_core.errors import InputError


def read_tuned_file(path: str | Path, file_format: str, holds: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, every tensor) of a file whose metadata names `file_format`; InputError naming
    `deltas` for an unreadable file or one of another format (`holds`: what it should hold)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != file_format:
                raise InputError("deltas", f"{path.name} holds no {holds} (format {file_format})")
            return meta, {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError) as err:
        raise InputError("deltas", f"{path.name} is not a readable safetensors file ({err})") from err
