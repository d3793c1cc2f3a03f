"""Where a massive activation comes from: which part of the block wrote it, and which weights.

For a residual-stream coordinate (layer, position, dim) after block `layer`:
resid_post = resid_pre + attn_out + mlp_out (pre-norm blocks), and the MLP part is
sum_n mlp_post[position, n] × W_down[dim, n]. The few neurons that dominate that sum, with
their down-projection entries, are the "super weights" (Yu et al. 2024).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from outlier_core.errors import InputError
from outlier_core.load.hooks import check_layer, run_hooked
from outlier_core.load.models import LoadedModel
from outlier_core.load.sites import hook_name
from outlier_core.load.tokens import encode


@dataclass(frozen=True)
class NeuronContribution:
    neuron: int
    activation: float  # mlp_post[position, neuron]
    weight: float  # W_down[dim, neuron], HF [out, in] indexing
    contribution: float  # activation × weight


@dataclass(frozen=True)
class Origin:
    layer: int
    position: int
    dim: int
    token: str
    resid_post: float
    parts: dict[str, float]  # resid_pre, attn_out, mlp_out at (position, dim)
    down_proj: str  # HF name of the down-projection whose entries `neurons` index
    neurons: tuple[NeuronContribution, ...]  # by |contribution|, descending


def top_contributions(mlp_post: torch.Tensor, w_down_row: torch.Tensor, top_k: int) -> tuple[NeuronContribution, ...]:
    """mlp_post: (d_mlp,) activations at one position; w_down_row: (d_mlp,) = W_down[dim, :]."""
    contribution = mlp_post * w_down_row  # (d_mlp,)
    order = contribution.abs().argsort(descending=True)[:top_k]
    return tuple(
        NeuronContribution(int(n), float(mlp_post[n]), float(w_down_row[n]), float(contribution[n]))
        for n in order
    )


def down_proj(model: LoadedModel, layer: int) -> tuple[str, torch.Tensor]:
    """The HF name and weight (d_model, d_mlp) of a layer's MLP down-projection."""
    name = f"model.layers.{layer}.mlp.down_proj.weight"
    weight = model.hf_parameters().get(name)
    if weight is None:
        raise InputError("model", f"no {name}: origin tracing supports Llama/Gemma-style MLPs")
    return name, model.parameter_values(name, weight)


def trace_origin(
    model: LoadedModel, text: str, layer: int, position: int, dim: int, prepend_bos: bool = True, top_k: int = 10
) -> Origin:
    check_layer(model, layer)
    if not 0 <= dim < model.d_model:
        raise InputError("dim", f"{dim} is out of range; d_model is {model.d_model}")
    encoded = encode(model, text, prepend_bos)
    if not 0 <= position < len(encoded.tokens):
        raise InputError("position", f"{position} is past the sequence ({len(encoded.tokens)} tokens)")
    down_name, w_down = down_proj(model, layer)
    captured: dict[str, torch.Tensor] = {}

    def keep(site: str):
        def hook(x: torch.Tensor, *, hook) -> None:  # (1, T, D) or (1, T, d_mlp)
            captured[site] = x[0, position].float()

        return hook

    sites = ("resid_pre", "attn_out", "mlp_out", "resid_post", "mlp_post")
    run_hooked(model, encoded.ids, [(hook_name(s, layer), keep(s)) for s in sites], stop_at_layer=layer + 1)
    w_down_row = w_down[dim].detach().float().to(captured["mlp_post"].device)  # (d_mlp,); an offloaded layer's rows are on the CPU
    return Origin(
        layer=layer,
        position=position,
        dim=dim,
        token=encoded.tokens[position],
        resid_post=float(captured["resid_post"][dim]),
        parts={s: float(captured[s][dim]) for s in ("resid_pre", "attn_out", "mlp_out")},
        down_proj=down_name,
        neurons=top_contributions(captured["mlp_post"], w_down_row, top_k),
    )
