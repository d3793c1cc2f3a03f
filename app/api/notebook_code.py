"""Copy as code: the CLI command and the Python call that reproduce a notebook entry.

Pure functions from an entry's kind, inputs (the request the UI sent) and results to text.
Where the CLI cannot say it (a stack mixing modes, perplexity on a bundled corpus, a merge),
the command is None and `note` says why; the Python call always can. A mask built by hand,
merged or imported is rebuilt by the Python call from its parts or from the exported files,
and `outlier-lab mask show` shows what such a file holds; a fine-tune that has ended is
repeated with the config its run recorded.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    cli: str | None
    python: str
    note: str | None = None


def code_for(kind: str, inputs: dict, results: dict | None = None) -> Code:
    try:
        if kind == "run":
            return _run(inputs, (results or {}).get("final"))
        return {"scan": _scan, "intervene": _intervene, "mask": _mask}.get(kind, _none)(inputs)
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
    if "build" in inputs:
        return _built(inputs)
    if "merge" in inputs:
        return _merged(inputs)
    if "import" in inputs:
        return _imported(inputs)
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


def _exported(mask_id: str) -> str:
    return f"mask-{mask_id}.json"


def _built(inputs: dict) -> Code:
    """Parts and dims added by clicks, to a new mask or onto the one the tab had open."""
    build = inputs["build"]
    parts = [(p["parameter"], p["kind"], p["index"], p.get("source", "click")) for p in build.get("parts") or []]
    dims = [(d["layer"], d["dim"]) for d in build.get("dims") or []]
    onto = build.get("onto")
    start = (f"mask = load_mask({_exported(onto)!r})  # the mask it extended, exported from the Selection page" if onto
             else f"mask = SelectionMask.empty(model, {build.get('name', 'my selection')!r})")
    python = "\n".join([
        "from outlier_core.load.models import load_model",
        "from outlier_core.select.mask_files import load_mask" if onto else "from outlier_core.select.masks import SelectionMask",
        "from outlier_core.select.mask_rules import extended",
        "",
        _load(inputs),
        start,
        f"mask = extended(model, mask, parts={parts!r}, dims={dims!r})",
        "mask.save('mask.json')",
        "print(mask.count)",
    ])
    cli = ["outlier-lab", "mask", "show", "mask.json", "--json"]
    return Code(shlex.join(cli), python, "the CLI builds masks by the rules only: run the Python call first; the command then shows the mask it wrote")


def _merged(inputs: dict) -> Code:
    merge = inputs["merge"]
    files = [_exported(mask_id) for mask_id in merge["ids"]]
    python = "\n".join([
        "from outlier_core.select.mask_files import load_mask",
        "",
        f"masks = [load_mask(path) for path in {files!r}]  # each exported from the Selection page",
        f"mask = masks[0].renamed({merge['name']!r})",
        "for other in masks[1:]:",
        "    mask = mask.with_parts(list(other.parts), other.shapes)",
        "mask.save('mask.json')",
        "print(mask.count)",
    ])
    return Code(None, python, f"the CLI does not merge masks: export {', '.join(files)} from the Selection page, then run the Python call")


def _imported(inputs: dict) -> Code:
    filename = inputs["import"]["filename"]
    python = "\n".join([
        "from outlier_core.select.mask_files import load_mask",
        "",
        f"mask = load_mask({filename!r})",
        "print(mask.count)",
    ])
    return Code(shlex.join(["outlier-lab", "mask", "show", filename, "--json"]), python, f"run it where {filename} is")


# A run's recorded config -> the finetune flags that repeat it.
CONFIG_FLAGS = {"steps": "--steps", "lr": "--lr", "full_lr": "--full-lr", "weight_decay": "--weight-decay", "batch_size": "--batch-size",
                "seq_len": "--seq-len", "seed": "--seed", "lora_rank": "--lora-rank"}


# The Fine-tune page's own files -> the name the copied code reads them under.
OWN_FILES = {"upload": ("my_text.txt", "the text file"), "task": ("my_task.jsonl", "the JSONL task file")}


def _run_data(inputs: dict) -> tuple[str, str | None]:
    """The run's data as `--data` and `train_data.load_data` take it (a bundled corpus or task by
    name), and what to do first when it was a file of the user's."""
    data = inputs.get("data", "prose")
    if data not in OWN_FILES:
        return data, None
    name, what = OWN_FILES[data]
    return name, f"save {what} you uploaded as {name}"


def _run(inputs: dict, final: dict | None = None) -> Code:
    """The launch as asked; once the run has ended, with every setting its config recorded."""
    baselines = inputs.get("baselines") or []
    data, first = _run_data(inputs)
    config = (final or {}).get("config") or {"steps": inputs["steps"], "lr": inputs["lr"]}
    flags = [arg for key, flag in CONFIG_FLAGS.items() if config.get(key) is not None for arg in (flag, repr(config[key]))]
    cli = ["outlier-lab", "finetune", *_model_args(inputs), "--mask", "mask.safetensors", "--data", data, *flags, *(["--baseline", *baselines] if baselines else []), "--json"]
    python = "\n".join([
        "from outlier_core.load.models import load_model",
        "from outlier_core.select.mask_files import load_mask",
        "from outlier_core.tune import train_data",
        "from outlier_core.tune.comparison import compare",
        "",
        _load(inputs),
        "mask = load_mask('mask.safetensors')  # exported from the Selection page",
        f"config = train_data.TrainConfig({', '.join(f'{key}={config[key]!r}' for key in CONFIG_FLAGS if config.get(key) is not None)})",
        f"data = train_data.load_data(model, {data!r}, config)  # packed text blocks, or task rows trained on their completions",
        f"compare(model, mask, {tuple(baselines)!r}, data, config, 'runs/notebook-run')",
    ])
    steps = ["export the mask from the Selection page as mask.safetensors", *([first] if first else [])]
    return Code(shlex.join(cli), python, f"first {' and '.join(steps)}")
