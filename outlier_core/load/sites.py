"""Hook names built by small explicit functions, never parsed.

A site is a short name for a per-layer hook point; `hook_name(site, layer)` gives the
TransformerLens name (`blocks.11.hook_resid_post`). Full suffixes such as
`hook_resid_post` or `ln1.hook_normalized` are accepted too.
"""

from __future__ import annotations

from outlier_core.errors import InputError
from outlier_core.load.models import LoadedModel

SITES: dict[str, str] = {
    "resid_pre": "hook_resid_pre",  # residual stream entering the block
    "resid_mid": "hook_resid_mid",  # after attention, before the MLP
    "resid_post": "hook_resid_post",  # leaving the block: where massive activations live
    "attn_out": "hook_attn_out",
    "mlp_out": "hook_mlp_out",
    "ln1": "ln1.hook_normalized",  # what the attention projections read, before the norm weight
    "ln2": "ln2.hook_normalized",  # what the MLP up/gate projections read, before the norm weight
    "ln1_out": "ln1.hook_out",  # after the norm weight: the projections' actual input
    "ln2_out": "ln2.hook_out",
    "mlp_post": "mlp.hook_post",  # MLP hidden activations, the down-projection's input (T, d_mlp)
}
PATTERN_SUFFIX = "attn.hook_pattern"  # (B, heads, query, key)

_BY_SUFFIX = {suffix: site for site, suffix in SITES.items()}


def canonical_site(site: str) -> str:
    """Map a short name or a hook suffix to the short name."""
    if site in SITES:
        return site
    if site in _BY_SUFFIX:
        return _BY_SUFFIX[site]
    raise InputError("site", f"unknown site {site!r}; choose one of {', '.join(SITES)}")


def hook_name(site: str, layer: int) -> str:
    return f"blocks.{layer}.{SITES[canonical_site(site)]}"


def pattern_hook(layer: int) -> str:
    return f"blocks.{layer}.{PATTERN_SUFFIX}"


def site_width(model: LoadedModel, site: str) -> int:
    return model.d_mlp if canonical_site(site) == "mlp_post" else model.d_model
