"""Pure functions over the UI's per-user state (what lives in dcc.Store) and API answers.

Nothing here speaks HTTP or builds components: data in, data out, so each is unit-tested
without a browser.
"""

from __future__ import annotations

import math
from collections import Counter

PRESETS: dict[str, str] = {
    "prose": (
        "The old lighthouse keeper walked down to the harbour every morning before sunrise. "
        "He counted the fishing boats, wrote the weather in a small notebook, and then went "
        "home to make tea for his sister, who had lived with him since the winter storm."
    ),
    "delimiters": "Apples, pears and plums. Then: bread; cheese; wine.\n\nAnd so, the list ends here.",
    "code": "def mean(values):\n    total = 0\n    for v in values:\n        total += v\n    return total / len(values)\n",
    "numbers": "In 1969, 3 astronauts flew 384,400 km; 2 of them walked on the Moon for 21.5 hours.",
}
PRESET_LABELS = {"prose": "Prose", "delimiters": "Delimiters", "code": "Code", "numbers": "Numbers"}
DEFAULT_PROMPT = {"text": PRESETS["prose"], "prepend_bos": True}

DEFAULT_SITE = "resid_post"  # where massive activations live


def options(vocabulary: dict) -> list[dict]:
    """Dropdown, radio or checklist options from one of the API's vocabularies (name -> {"label", ...})."""
    return [{"label": entry["label"], "value": name} for name, entry in vocabulary.items()]


def token_label(position: int, token: str) -> str:
    """`3 ' lighthouse'`: the position and the token piece with its spaces and newlines visible."""
    return f"{position} {token!r}"


def top_values(layer: dict, n: int = 3) -> list[float]:
    """|x| of a scan layer's n largest entries, largest first; fewer when the scan kept fewer."""
    return sorted((abs(t["value"]) for t in layer["top"]), reverse=True)[:n]


def massive_groups(massive: list[dict], tokens: list[str]) -> list[dict]:
    """Massive entries grouped by (position, dim): the layers they span and their peak.

    One row per coordinate reads better than a row per layer: the same (BOS, dim 507)
    entry is massive in 17 consecutive layers of SmolLM2.
    """
    groups: dict[tuple[int, int], list[dict]] = {}
    for m in massive:
        groups.setdefault((m["position"], m["dim"]), []).append(m)
    rows = []
    for (position, dim), items in groups.items():
        peak = max(items, key=lambda m: abs(m["value"]))
        layers = sorted(m["layer"] for m in items)
        rows.append({
            "position": position,
            "token": tokens[position] if position < len(tokens) else "",
            "dim": dim,
            "layers": layer_ranges(layers),
            "n_layers": len(layers),
            "first_layer": layers[0],
            "peak_layer": peak["layer"],
            "peak": peak["value"],
        })
    return sorted(rows, key=lambda r: -abs(r["peak"]))


def layer_ranges(layers: list[int]) -> str:
    """[2, 3, 4, 7] -> '2–4, 7'."""
    if not layers:
        return ""
    spans, start, prev = [], layers[0], layers[0]
    for layer in layers[1:] + [None]:
        if layer is not None and layer == prev + 1:
            prev = layer
            continue
        spans.append(f"{start}" if start == prev else f"{start}–{prev}")
        if layer is not None:
            start = prev = layer
    return ", ".join(spans)


def recurring(massive: list[dict], tokens: list[str], n: int = 8) -> dict:
    """Which dims and which positions carry massive values, counted in distinct layers, most first."""
    dims = Counter(dim for _, dim in {(m["layer"], m["dim"]) for m in massive})
    carriers = Counter(position for _, position in {(m["layer"], m["position"]) for m in massive})
    return {
        "dims": [{"dim": d, "layers": c} for d, c in dims.most_common(n)],
        "tokens": [{"position": p, "token": tokens[p] if p < len(tokens) else "", "layers": c} for p, c in carriers.most_common(n)],
    }


def top_dims_per_token(matrix: dict, k: int = 3) -> list[dict]:
    """Per position of an /api/activations answer, its k largest |x| among the dims shown."""
    rows = []
    for position, (token, values) in enumerate(zip(matrix["tokens"], matrix["values"])):
        order = sorted(range(len(values)), key=lambda i: -abs(values[i]))[:k]
        rows.append({"position": position, "token": token, "top": [{"dim": matrix["dims"][i], "value": values[i]} for i in order]})
    return rows


def coordinate_from_click(click: dict | None, matrix: dict, layer: int, site: str) -> dict | None:
    """The activation coordinate under a heatmap click, or None (no click, the 'rest' column, a pooled block).

    Read from the cell's axis labels: Dash passes a heatmap click's x and y but not its customdata.
    """
    if not click or not click.get("points") or matrix.get("block_size", 1) != 1:
        return None
    point = click["points"][0]
    try:
        dim = int(point["x"])
        position = int(str(point["y"]).split(" ", 1)[0])
    except (KeyError, TypeError, ValueError):  # the "rest" column, or a click outside the cells
        return None
    if dim not in matrix["dims"] or not 0 <= position < len(matrix["tokens"]):
        return None
    value = matrix["values"][position][matrix["dims"].index(dim)]
    return {"layer": layer, "site": site, "position": position, "dim": dim, "token": matrix["tokens"][position], "value": value}


def intervention_for(coordinate: dict, mode: str, value: float | None) -> dict:
    """The API's intervention dict for one coordinate; value only where the mode uses one."""
    item = {"layer": coordinate["layer"], "site": coordinate["site"], "position": coordinate["position"], "dim": coordinate["dim"], "mode": mode}
    item["value"] = float(value) if mode in ("scale", "set") else None
    return item


def _same_coordinate(a: dict, b: dict) -> bool:
    return all(a[key] == b[key] for key in ("layer", "site", "position", "dim"))


def stack_intervention(stack: list[dict], item: dict) -> list[dict]:
    """Interventions stack across coordinates; a new one on a coordinate replaces the old one there,
    so Zero then Mean-replace on one entry means 'mean', not 'zero, then mean of what is left'."""
    return [old for old in stack if not _same_coordinate(old, item)] + [item]


def split_fitting(stack: list[dict], n_tokens: int, n_layers: int) -> tuple[list[dict], list[dict]]:
    """(the interventions that fit a prompt of n_tokens on a model of n_layers, those that do not)."""
    fits = [item for item in stack if item["position"] < n_tokens and item["layer"] < n_layers]
    return fits, [item for item in stack if item not in fits]


def effect_record(prompt: dict, model: dict | None, stack: list[dict], eval_source: str | None, result: dict) -> dict:
    """An /api/intervene answer as the EFFECT store keeps it: with everything it was computed from."""
    return {"key": prompt_key(prompt), "model": model_key(model) if model else None, "stack": stack, "eval": eval_source, "result": result}


def effect_belongs(effect: dict | None, prompt: dict, stack: list[dict] | None, model: dict | None = None) -> bool:
    """Whether stored intervention results were computed on this prompt with exactly this stack
    (and on this model, when one is given: another model, or deltas switched on or off, make them stale)."""
    if not (effect and stack and effect["key"] == prompt_key(prompt) and effect.get("stack", stack) == stack):
        return False
    return model is None or effect.get("model") == model_key(model)


def effect_is_current(effect: dict | None, prompt: dict, model: dict, stack: list[dict], eval_source: str) -> bool:
    """`effect_belongs` on this model, against this perplexity source: nothing to recompute."""
    return effect_belongs(effect, prompt, stack, model) and effect.get("eval") == eval_source


def describe_intervention(item: dict) -> str:
    action = {"zero": "zero", "mean": "mean-replace", "scale": f"scale ×{item.get('value')}", "set": f"set to {item.get('value')}"}[item["mode"]]
    return f"L{item['layer']} {item['site']} pos {item['position']} dim {item['dim']}: {action}"


def format_value(x: float | None) -> str:
    """Numbers for people: 24,926 / 18.4 / 0.0312 / 1.7e+06; '—' when the API had none (overflow)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    magnitude = abs(x)
    if magnitude >= 1e6:
        return f"{x:.3g}"
    if magnitude >= 100:
        return f"{x:,.0f}"
    if magnitude >= 1 or magnitude == 0:
        return f"{x:.3g}" if magnitude < 10 else f"{x:.1f}"
    return f"{x:.3g}"


def format_perplexity(x: float | None) -> str:
    """Four significant digits below 10,000 so a small change still shows (263.1 vs 262.8);
    whole numbers with separators up to a billion (485,100); scientific beyond."""
    if x is None or not math.isfinite(x):
        return "—"
    if abs(x) < 1e4:
        return f"{x:.4g}"
    return f"{x:,.0f}" if abs(x) < 1e9 else f"{x:.3e}"


def perplexity_change(baseline: float | None, after: float | None) -> str:
    """'×91,000', '×1.02', or '' when either side is missing."""
    if not baseline or after is None:
        return ""
    ratio = after / baseline
    return f"×{ratio:,.0f}" if ratio >= 100 else f"×{ratio:.3g}"


def prompt_key(prompt: dict) -> list:
    """What a cached answer was computed from: a scan is reused only for the same prompt and BOS."""
    return [prompt["text"], bool(prompt["prepend_bos"])]


def scan_cache(scan: dict, prompt: dict, model: dict, site: str, rule: str) -> dict:
    """The overview's scan as the SCAN store keeps it, with what it was computed from."""
    return {"key": [*prompt_key(prompt), site, rule, model_key(model)], "scan": scan}


def cached_scan(cached: dict | None, prompt: dict, model: dict, site: str | None = None, rule: str | None = None) -> dict | None:
    """The stored scan when it was computed from this prompt on this model, and at this site under
    this rule when they are given (the sinks and the massive dims of other pages take any); else None."""
    if not cached:
        return None
    text, prepend_bos, cached_site, cached_rule, cached_model = cached["key"]
    if [text, prepend_bos] != prompt_key(prompt) or cached_model != model_key(model):
        return None
    if site is not None and (cached_site, cached_rule) != (site, rule):
        return None
    return cached["scan"]


def model_key(model: dict) -> str:
    """The model a cached answer was computed on: its name, and the run deltas it carried.

    Switched-off deltas leave the base weights exactly, so they share the base model's key.
    """
    deltas = model.get("deltas")
    if not deltas or not (deltas["enabled"] or deltas["merged"]):
        return model["name"]
    return f"{model['name']}+{deltas['run']}/{deltas['method']}{' merged' if deltas['merged'] else ''}"


def deltas_line(deltas: dict) -> str:
    """'serving base + 20261129-101500-a1b2c3/mask deltas — on' (or off, or merged)."""
    which = f"{deltas['run']}/{deltas['method']}"
    if deltas["merged"]:
        return f"serving base + {which} deltas — merged into the weights until the model is reloaded"
    return f"serving base + {which} deltas — {'on' if deltas['enabled'] else 'off'}"
