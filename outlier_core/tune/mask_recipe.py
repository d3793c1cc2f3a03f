"""A mask as a recipe: the outlier rules, their knobs and a budget, suggested inside a run.

A sweep varies the budget and the rules' own knobs (which rules build the mask, the layer
window n around the strongest norm outlier); each trial builds its mask from its recipe on
the model its process loaded, so the trial's config alone replays it and whoever launches
it never loads a model. The rules read the first `max_tokens` tokens of a bundled corpus
(BOS first), as `outlier-lab mask suggest` does by default.
"""

from __future__ import annotations

from dataclasses import dataclass

from outlier_core.errors import InputError
from outlier_core.intervene.corpus import BUNDLED, DEFAULT_CORPUS
from outlier_core.load.models import LoadedModel
from outlier_core.select import RULES
from outlier_core.select.masks import SelectionMask


@dataclass(frozen=True)
class MaskRecipe:
    budget: int  # at most this many coordinates; the rules may find fewer
    rules: tuple[str, ...] = RULES  # which rules, in priority order
    window: int = 0  # layer window n: of norm-outlier layers within n of each other keep the strongest; 0 keeps all
    corpus: str | None = None  # the bundled corpus the rules read; None: the default
    max_tokens: int = 128

    def __post_init__(self) -> None:
        if isinstance(self.budget, bool) or not isinstance(self.budget, int) or self.budget < 1:
            raise InputError("budget", "must be a whole number of parameters >= 1")
        unknown = [r for r in self.rules if r not in RULES]
        if unknown or not self.rules or len(set(self.rules)) != len(self.rules):
            raise InputError("rules", f"choose distinct rules from {', '.join(RULES)}")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 0:
            raise InputError("window", "must be a whole number >= 0")
        if self.corpus is not None and self.corpus not in BUNDLED:
            raise InputError("corpus", f"must be a bundled corpus: {', '.join(BUNDLED)}")
        if self.max_tokens < 2:
            raise InputError("max_tokens", "must be at least 2")

    def build(self, model: LoadedModel) -> SelectionMask:
        """The rules' mask on `model`, trimmed to the budget; InputError naming `rules` when they find nothing."""
        from outlier_core.intervene.corpus import bundled
        from outlier_core.select.mask_rules import RuleConfig, prompt_from_text, suggest_mask

        prompt = prompt_from_text(model, bundled(self.corpus or DEFAULT_CORPUS).text, True, self.max_tokens)
        config = RuleConfig(rules=self.rules, window=self.window)
        mask = suggest_mask(model, prompt, self.budget, config, f"outlier rules ≤{self.budget}").mask
        if mask.count == 0:
            raise InputError("rules", f"{', '.join(self.rules)} found no coordinates in {model.name}")
        return mask


def setting_label(rules: tuple[str, ...], window: int) -> str:
    """A rule setting in a few words, for tables: "super_weights+norm_outliers, n=2"."""
    return "+".join(rules) + (f", n={window}" if window else "")
