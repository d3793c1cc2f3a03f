"""The vocabularies a client offers its user: sites, rules with their default thresholds, tuning methods."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from outlier_core.observe.detect import FeatureRule


class SiteOut(BaseModel):
    hook: str = Field(description="the TransformerLens hook of the site in block L: blocks.L.<hook>")
    label: str
    width: Literal["d_model", "d_mlp"] = Field(description="the size of the site's last axis: residual-width sites have d_model dims")


class MassiveRuleOut(BaseModel):
    label: str
    abs_threshold: float = Field(description="massive if |x| > this")
    median_ratio: float = Field(description="and |x| > this × median |x| of the layer")


class WeightRuleOut(BaseModel):
    label: str
    k: float = Field(description="the default threshold of this rule kind")


class Labelled(BaseModel):
    label: str


class MethodOut(BaseModel):
    label: str
    baseline: bool = Field(description="trained after the mask, from the same base, for comparison")


class VocabOut(BaseModel):
    """Each vocabulary is an object keyed by the name the other routes take, in the order to offer them."""

    sites: dict[str, SiteOut]
    massive_rules: dict[str, MassiveRuleOut] = Field(description="rules for /api/scan's abs_threshold and median_ratio")
    feature_rule: FeatureRule = Field(description="LLM.int8 outlier features, as the mask rules read them")
    weight_rules: dict[str, WeightRuleOut] = Field(description="the rule kinds of /api/weights")
    mask_rules: dict[str, Labelled] = Field(description="the rules of /api/masks/suggest, in their default priority order")
    methods: dict[str, MethodOut] = Field(description="the tuning methods of /api/finetune; the models are at /api/models")
