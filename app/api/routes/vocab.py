"""GET /api/vocab: the names the other routes take, with plain labels and default thresholds.

Read from the core, so a client offers what this server knows instead of a copy of it.
Labels are the API's words for people; a name the core adds without one shows as itself.
"""

from __future__ import annotations

from types import SimpleNamespace

from fastapi import APIRouter

from app.api.schemas.common import ERROR_RESPONSES
from app.api.schemas.vocab import VocabOut
from outlier_core.load.sites import SITES, site_width
from outlier_core.observe.detect import (
    INT8_RULE,
    PAPER_RULE,
    RELATIVE_RULE,
    MassiveRule,
)
from outlier_core.observe.tensor_stats import DEFAULT_K
from outlier_core.select.mask_rules import RULES as MASK_RULES
from outlier_core.tune.methods import BASELINES, METHODS

router = APIRouter(tags=["vocabulary"])

SITE_LABELS = {
    "resid_pre": "residual stream into the block",
    "resid_mid": "residual after attention",
    "resid_post": "residual stream after the block",
    "attn_out": "attention output",
    "mlp_out": "MLP output",
    "ln1": "normalized attention input",
    "ln2": "normalized MLP input",
    "ln1_out": "attention input, norm weight applied",
    "ln2_out": "MLP input, norm weight applied",
    "mlp_post": "MLP hidden activations",
}
MASSIVE_RULES = {"paper": (PAPER_RULE, ""), "relative": (RELATIVE_RULE, " (small models)")}  # the rule, and when to use it
WEIGHT_RULE_LABELS = {"sigma": "σ from the mean", "percentile": "percentile", "mad": "median / MAD"}
MASK_RULE_LABELS = {
    "super_weights": "super weights (down-projection entries writing massive dims)",
    "norm_outliers": "norm outlier entries",
    "attention_reads": "attention columns reading outlier features",
    "ffn_reads": "MLP columns reading outlier features",
}
METHOD_LABELS = {"mask": "the selection mask", "random": "random mask, same size", "ln": "LN-only", "ln_top": "LN, top entries within the budget", "shira": "SHiRA (peft), same budget", "lora": "LoRA, same budget", "full": "full fine-tune"}

# site_width reads the model's two widths; handed their names, it answers with the name of the one a site has.
_WIDTH_NAMES = SimpleNamespace(d_model="d_model", d_mlp="d_mlp")


def tuning_methods() -> dict[str, bool]:
    """The core's tuning methods in the order a comparison runs them, each saying whether it is a baseline beside the mask."""
    return {name: name in BASELINES for name in METHODS}


def massive_label(name: str, rule: MassiveRule, when: str) -> str:
    """'paper: |x| > 100 and > 1000 × median', or without the floor when the rule has none."""
    floor = f"|x| > {rule.abs_threshold:g} and > " if rule.abs_threshold > 0 else "|x| > "
    return f"{name}: {floor}{rule.median_ratio:g} × median{when}"


def vocabulary() -> dict:
    return {
        "sites": {site: {"hook": hook, "label": f"{SITE_LABELS.get(site, site)} ({site})", "width": site_width(_WIDTH_NAMES, site)} for site, hook in SITES.items()},
        "massive_rules": {
            name: {"label": massive_label(name, rule, when), "abs_threshold": rule.abs_threshold, "median_ratio": rule.median_ratio}
            for name, (rule, when) in MASSIVE_RULES.items()
        },
        "feature_rule": INT8_RULE,
        "weight_rules": {kind: {"label": WEIGHT_RULE_LABELS.get(kind, kind), "k": k} for kind, k in DEFAULT_K.items()},
        "mask_rules": {name: {"label": MASK_RULE_LABELS.get(name, name)} for name in MASK_RULES},
        "methods": {name: {"label": METHOD_LABELS.get(name, name), "baseline": baseline} for name, baseline in tuning_methods().items()},
    }


@router.get("/vocab", response_model=VocabOut, responses=ERROR_RESPONSES)
async def vocab() -> dict:
    """Sites, massive-activation and weight rules with their default thresholds, mask rules, tuning methods.

    It needs no model, so it answers while one loads."""
    return vocabulary()
