"""`outlier-lab scan`: the rise/plateau/fall curve and the massive activations of one prompt."""

from __future__ import annotations

import argparse

from app.cli.common import (
    add_model_arguments,
    add_text_arguments,
    emit_json,
    emit_lines,
    finite_float,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_text_arguments(parser)
    parser.add_argument("--site", default="resid_post", help="resid_pre, resid_mid, resid_post, attn_out, mlp_out, ln1, ln2, ... (default: %(default)s)")
    parser.add_argument("--top-k", type=int, default=3, help="largest |x| entries to list per layer (default: %(default)s)")
    parser.add_argument("--abs-threshold", type=finite_float, default=None, help="massive if |x| exceeds this (paper: 100)")
    parser.add_argument("--median-ratio", type=finite_float, default=None, help="... and this multiple of the layer median |x| (paper: 1000)")
    parser.add_argument("--relative", action="store_true", help="use the relative rule for small models (ratio to median only)")


def rule_from(args: argparse.Namespace):
    from dataclasses import replace

    from outlier_core.observe.detect import PAPER_RULE, RELATIVE_RULE

    rule = RELATIVE_RULE if args.relative else PAPER_RULE
    overrides = {"abs_threshold": args.abs_threshold, "median_ratio": args.median_ratio}
    return replace(rule, **{k: v for k, v in overrides.items() if v is not None})


def report(scan) -> list[str]:
    lines = [f"{'layer':>5} {'median|x|':>10} {'max|x|':>10} {'sink@0':>7}  top entries (position:token dim=value)"]
    for summary, sink in zip(scan.layers, scan.sink_share):
        top = "  ".join(f"{t.position}:{t.token!r} d{t.dim}={t.value:.1f}" for t in summary.top)
        lines.append(f"{summary.layer:>5} {summary.median_abs:>10.3f} {summary.max_abs:>10.1f} {sink:>7.3f}  {top}")
    lines.append("")
    if not scan.massive:
        lines.append("no massive activations under this rule (try --relative for small models)")
        return lines
    lines.append(f"massive activations ({len(scan.massive)}):")
    lines += [f"  layer {m.layer:>2}  position {m.position:>3} {m.token!r:<16} dim {m.dim:>5}  {m.value:>10.1f}" for m in scan.massive]
    return lines


def run(args: argparse.Namespace) -> None:
    from app.cli.common import load_model_for
    from outlier_core.contract import to_json
    from outlier_core.observe.capture import scan

    rule = rule_from(args)
    model = load_model_for(args)
    result = scan(model, args.text, prepend_bos=args.prepend_bos, site=args.site, top_k=args.top_k, rule=rule)
    if not args.json:
        emit_lines(report(result))
        return
    payload = to_json(result)
    del payload["head_sink_share"]  # the command's contract predates the per-head shares the API added
    emit_json(payload)
