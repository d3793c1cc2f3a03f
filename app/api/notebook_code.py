"""Copy as code: the CLI command and the Python call that reproduce a notebook entry.

Pure functions from an entry's kind and inputs (the request the UI sent) to text. Where the
CLI cannot say it (a stack mixing modes, perplexity on a bundled corpus), the command is None
and `note` says why; the Python call always can.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    cli: str | None
    python: str
    note: str | None = None


def code_for(kind: str, inputs: dict) -> Code:
    try:
        return {"scan": _scan, "intervene": _intervene, "mask": _mask, "run": _run}.get(kind, _none)(inputs)
    except (KeyError, TypeError, AttributeError) as err:  # an entry posted by hand need not carry a request's fields
        return Code(None, "# this entry's inputs do not say enough to reproduce it", f"its inputs lack or misstate {err}")


def _none(_inputs: dict) -> Code:
    return Code(None, "# nothing to reproduce", "this entry records a view, not a computation")


def _model_args(inputs: dict) -> list[str]:
    return ["--model", inputs["model"], "--device", inputs.get("device") or "cpu"]


def _bos(inputs: dict) -> list[str]:
    return [] if inputs.get("prepend_bos", True) else ["--no-bos"]


def _load(inputs: dict) -> str:
    return f"model = load_model({inputs['model']!r}, device={(inputs.get('device') or 'cpu')!r})"


def _scan(inputs: dict) -> Code:
    relative = inputs.get("rule") == "relative"
    cli = ["outlier-lab", "scan", *_model_args(inputs), "--text", inputs["text"], *_bos(inputs), "--site", inputs.get("site", "resid_post"),
           *(["--relative"] if relative else []), "--json"]
    rule = "RELATIVE_RULE" if relative else "PAPER_RULE"
    python = "\n".join([
        "from outlier_core.load.models import load_model",
        "from outlier_core.observe.capture import scan",
        f"from outlier_core.observe.detect import {rule}",
        "",
        _load(inputs),
        f"result = scan(model, {inputs['text']!r}, prepend_bos={inputs.get('prepend_bos', True)!r}, site={inputs.get('site', 'resid_post')!r}, rule={rule})",
    ])
    return Code(shlex.join(cli), python)


def _intervention_call(item: dict) -> str:
    value = f", value={item['value']!r}" if item.get("value") is not None else ""
    return f"Intervention(layer={item['layer']}, position={item['position']}, dim={item['dim']}, mode={item['mode']!r}{value}, site={item['site']!r})"


def _intervene(inputs: dict) -> Code:
    stack, corpus = inputs["interventions"], inputs.get("eval_corpus")
    python = "\n".join([
        "from outlier_core.intervene.corpus import bundled",
        "from outlier_core.intervene.evaluate import evaluate",
        "from outlier_core.intervene.interventions import Intervention",
        "from outlier_core.load.models import load_model",
        "",
        _load(inputs),
        "interventions = [",
        *[f"    {_intervention_call(item)}," for item in stack],
        "]",
        f"result = evaluate(model, {inputs['text']!r}, interventions, prepend_bos={inputs.get('prepend_bos', True)!r}"
        + (f", eval_text=bundled({corpus!r}))" if corpus else ")"),
        "print(result.baseline.perplexity, result.intervened.perplexity, result.control.perplexity)",
    ])
    shared = {(item["site"], item["mode"], item.get("value")) for item in stack}
    if len(shared) != 1:
        return Code(None, python, "the CLI applies one mode at one site per call; this stack mixes them")
    if corpus:
        return Code(None, python, f"the CLI scores the prompt or --eval-file; the bundled {corpus} corpus is the Python call's")
    site, mode, value = shared.pop()
    cli = ["outlier-lab", "intervene", *_model_args(inputs), "--text", inputs["text"], *_bos(inputs), "--site", site, "--mode", mode,
           *(["--value", repr(value)] if value is not None else []), *[arg for item in stack for arg in ("--at", f"{item['layer']}:{item['position']}:{item['dim']}")],
           "--json"]
    return Code(shlex.join(cli), python)


def _mask(inputs: dict) -> Code:
    suggest = inputs.get("suggest")
    if not suggest:
        return Code(None, "from outlier_core.select.mask_files import load_mask\n\nmask = load_mask('MASK.json')  # exported from the Selection page",
                    "a mask built by hand, merged or imported: export its file from the Selection page")
    source = ["--text", suggest["text"]] if suggest.get("text") else ["--corpus", "prose"]
    cli = ["outlier-lab", "mask", "suggest", *_model_args(inputs), "--budget", str(suggest["budget"]), *source, *_bos(suggest),
           "--rules", ",".join(suggest["rules"]), "--window", str(suggest.get("window", 0)), "--name", suggest["name"], "--out", "mask.json", "--json"]
    text = repr(suggest["text"]) if suggest.get("text") else "load_corpus('prose').text"
    python = "\n".join([
        "from outlier_core.load.models import load_model",
        "from outlier_core.observe.tensor_stats import WeightRule",
        "from outlier_core.select.mask_rules import RuleConfig, prompt_from_text, suggest_mask",
        "from outlier_core.tune.train_data import load_corpus",
        "",
        _load(inputs),
        f"config = RuleConfig(rules={tuple(suggest['rules'])!r}, norm_rule=WeightRule('sigma', 3.0), window={suggest.get('window', 0)}, contribution_share=0.05)",
        f"prompt = prompt_from_text(model, {text}, {suggest.get('prepend_bos', True)!r}, 128)",
        f"suggestion = suggest_mask(model, prompt, {suggest['budget']}, config, {suggest['name']!r})",
        "suggestion.mask.save('mask.json')",
    ])
    return Code(shlex.join(cli), python)


def _run(inputs: dict) -> Code:
    baselines = inputs.get("baselines") or []
    cli = ["outlier-lab", "finetune", *_model_args(inputs), "--mask", "mask.safetensors", "--steps", str(inputs["steps"]), "--lr", repr(inputs["lr"]),
           *(["--baseline", *baselines] if baselines else []), "--json"]
    python = "\n".join([
        "from outlier_core.load.models import load_model",
        "from outlier_core.select.mask_files import load_mask",
        "from outlier_core.tune import train_data",
        "from outlier_core.tune.comparison import compare",
        "",
        _load(inputs),
        "mask = load_mask('mask.safetensors')  # exported from the Selection page",
        f"config = train_data.TrainConfig(steps={inputs['steps']}, lr={inputs['lr']!r})",
        f"data = train_data.make_data(model, train_data.load_corpus({inputs.get('data', 'prose')!r}), config)",
        f"compare(model, mask, {tuple(baselines)!r}, data, config, 'runs/notebook-run')",
    ])
    return Code(shlex.join(cli), python, "export the mask from the Selection page as mask.safetensors first")
