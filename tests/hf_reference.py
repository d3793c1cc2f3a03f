"""The plain Hugging Face side of the tiny-model checks: the `hf_tiny` fixture never
passes through TransformerLens, so its numbers are an independent reference."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from outlier_core.load.models import tiny_random_hf


def byte_ids(hf: torch.nn.Module, text: str, bos: bool = True) -> list[int]:
    """Ids from the reference copy's own tokenizer, BOS added by hand."""
    tokenizer = hf.byte_tokenizer
    return ([tokenizer.bos_token_id] if bos else []) + tokenizer(text, add_special_tokens=False).input_ids


def hf_forward(hf: torch.nn.Module, ids: list[int], zero: tuple[int, int, int] | None = None) -> tuple[list[torch.Tensor], torch.Tensor, tuple]:
    """Decoder-layer outputs L × (T, D), logits (T, V) and attentions; optionally zeroing
    one (layer, position, dim) of the residual stream on the way."""
    outputs: list[torch.Tensor] = []

    def keep(layer: int):
        def hook(module, inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            if zero is not None and zero[0] == layer:
                hidden = hidden.clone()
                hidden[0, zero[1], zero[2]] = 0.0
                output = (hidden, *output[1:]) if isinstance(output, tuple) else hidden
            outputs.append(hidden[0])
            return output

        return hook

    handles = [layer.register_forward_hook(keep(i)) for i, layer in enumerate(hf.model.layers)]
    try:
        with torch.no_grad():
            result = hf(torch.tensor([ids]), output_attentions=True)
    finally:
        for handle in handles:
            handle.remove()
    return outputs, result.logits[0], result.attentions


def sparse_edited(path: Path) -> torch.nn.Module:
    """A plain HF tiny model with a sparse-deltas file's values added at its flat positions, by hand."""
    hf, _ = tiny_random_hf()
    params = dict(hf.named_parameters())
    tensors = load_file(str(path))
    with torch.no_grad():
        for key, index in tensors.items():
            if key.endswith(".index"):
                name = key.removesuffix(".index")
                params[name].view(-1)[index] += tensors[f"{name}.values"]
    return hf.eval()
