"""`outlier-lab mask`: build a selection mask by the outlier rules, or show one.

    outlier-lab mask suggest --budget 10000 --out masks/outliers.json
    outlier-lab mask show masks/outliers.json
"""

from __future__ import annotations

import argparse

from app.cli.common import add_model_arguments, emit_json, emit_lines, finite_float
from outlier_core.select import RULES


def rule_list(value: str) -> tuple[str, ...]:
    rules = tuple(r.strip() for r in value.split(",") if r.strip())
    unknown = [r for r in rules if r not in RULES]
    if not rules or unknown:
        raise argparse.ArgumentTypeError(f"expected comma-separated rules from {', '.join(RULES)}, got {value!r}")
    return rules


def positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value!r}")
    return int(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="mask_command", required=True)
    suggest = commands.add_parser("suggest", help="a mask by the outlier rules, trimmed to a parameter budget")
    add_model_arguments(suggest)
    suggest.add_argument("--budget", required=True, type=positive_int, help="most parameters the mask may select")
    source = suggest.add_mutually_exclusive_group()
    source.add_argument("--text", help="the prompt whose activations the rules read")
    source.add_argument("--corpus", help="a text or JSONL file, or a bundled corpus (prose, code); default: prose")
    suggest.add_argument("--max-tokens", type=positive_int, default=128, help="tokens of the text or corpus to run (default: %(default)s)")
    suggest.add_argument("--no-bos", dest="prepend_bos", action="store_false", help="do not prepend the BOS token")
    suggest.add_argument("--rules", type=rule_list, default=RULES, help=f"comma-separated, in priority order (default: {','.join(RULES)})")
    suggest.add_argument("--norm-rule", choices=("sigma", "percentile", "mad"), default="sigma", help="norm outlier rule (default: %(default)s)")
    suggest.add_argument("--norm-k", type=finite_float, default=3.0, help="norm outlier threshold (default: %(default)s)")
    suggest.add_argument("--window", type=int, default=0, help="layer-window sparsity n: keep one norm layer per ±n layers (default: off)")
    suggest.add_argument("--contribution-share", type=finite_float, default=0.05, help="super weights: least share of the massive value an entry writes (default: %(default)s)")
    suggest.add_argument("--name", default="outlier rules", help="the mask's name (default: %(default)s)")
    suggest.add_argument("--out", required=True, help="MASK.json; its .safetensors twin is written beside it")
    suggest.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    show = commands.add_parser("show", help="parts, provenance and counts of a mask file")
    show.add_argument("mask", help="MASK.json or MASK.safetensors")
    show.add_argument("--json", action="store_true", help="print the manifest on stdout")


def describe(mask, found: dict | None = None, budget: int | None = None) -> list[str]:
    lines = [f"mask {mask.name!r} for {mask.model}: {mask.count:,} parameters ({mask.share:.6%} of {mask.n_model_params:,})"]
    if budget is not None:
        lines.append(f"budget {budget:,}; the rules found " + ", ".join(f"{rule} {n:,}" for rule, n in (found or {}).items()))
    lines.append("")
    lines.append(f"{'parameter':<48} {'kind':<8} {'size':>6}  source")
    for part in mask.parts:
        lines.append(f"{part.parameter:<48} {part.kind:<8} {part.index.shape[0]:>6}  {part.source}")
    return lines


def run(args: argparse.Namespace) -> None:
    if args.mask_command == "show":
        from outlier_core.contract import to_json
        from outlier_core.select.mask_files import load_mask

        mask = load_mask(args.mask)
        emit_json(to_json(mask.summary())) if args.json else emit_lines(describe(mask))
        return
    run_suggest(args)


def run_suggest(args: argparse.Namespace) -> None:
    from app.cli.common import load_model_for
    from outlier_core.contract import to_json
    from outlier_core.observe.tensor_stats import WeightRule
    from outlier_core.select.mask_rules import (
        RuleConfig,
        prompt_from_text,
        suggest_mask,
    )
    from outlier_core.tune.train_data import load_corpus

    config = RuleConfig(
        rules=args.rules,
        norm_rule=WeightRule(args.norm_rule, args.norm_k),
        window=args.window,
        contribution_share=args.contribution_share,
    )
    model = load_model_for(args)
    text = args.text if args.text is not None else load_corpus(args.corpus, "corpus").text
    prompt = prompt_from_text(model, text, args.prepend_bos, args.max_tokens)
    suggestion = suggest_mask(model, prompt, args.budget, config, args.name)
    json_path, tensor_path = suggestion.mask.save(args.out)
    if args.json:
        emit_json({**to_json(suggestion), "files": [str(json_path), str(tensor_path)]})
    else:
        emit_lines([*describe(suggestion.mask, suggestion.found, args.budget), "", f"wrote {json_path} and {tensor_path}"])
