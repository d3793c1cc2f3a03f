"""`outlier-lab weights`: statistics of every norm weight and projection matrix, and the norm
scale at the massive-activation dims (do the norms mute the massive dims?)."""

from __future__ import annotations

import argparse
import logging

from app.cli.common import add_model_arguments, emit_json, emit_lines, finite_float

log = logging.getLogger(__name__)

# A short built-in sentence for the quick scan that finds the massive dims; any prose will do.
SCAN_TEXT = "The farmer opened the gate, and the sheep ran out into the green field."


def dim_list(value: str) -> list[int]:
    """`507,247` -> [507, 247], for argparse `type=`."""
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated dims such as 507,247, got {value!r}")
    return [int(p) for p in parts]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--rule", choices=("sigma", "percentile", "mad"), default="sigma", help="outlier rule (default: %(default)s)")
    parser.add_argument("--k", type=finite_float, default=None, help="sigma/mad: multiples of (robust) σ, default 3; percentile: the upper percentile, default 99")
    parser.add_argument("--layer", type=int, default=None, help="only this layer's tensors")
    parser.add_argument("--kinds", default="norm,matrix", help="comma-separated: norm, matrix, embedding (default: %(default)s)")
    parser.add_argument("--dims", type=dim_list, default=None, help="residual dims for the norm view, e.g. 507,247 (default: the massive dims of a quick scan)")
    parser.add_argument("--lod", action="store_true", help="also OWL's layerwise outlier ratio of every layer on the built-in sentence (one more forward pass)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _optional(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def stats_table(result) -> list[str]:
    offset = f"; norm rows describe {result.norm_offset:g} + w" if result.norm_offset else ""
    lines = [
        f"{result.model}: rule {result.rule.kind} k={result.rule.k:g}{offset}",
        f"{'tensor':<48} {'shape':>11} {'mean':>10} {'σ':>10} {'min':>10} {'max':>10} {'#out':>6} {'bimod':>6}",
    ]
    for p in result.parameters:
        s = p.summary
        shape = "×".join(str(n) for n in p.shape)
        lines.append(
            f"{p.name:<48} {shape:>11} {s.mean:>10.4g} {s.std:>10.4g} {s.min:>10.4g} {s.max:>10.4g} "
            f"{p.outliers.count:>6} {_optional(p.bimodality, '6.3f'):>6}"
        )
    notes = sorted({p.note for p in result.parameters if p.note})
    return lines + [f"note: {n}" for n in notes]


def norm_table(view, dims_source: str) -> list[str]:
    if not view.entries:
        return ["no residual-width norm weights in the chosen layers"]
    size = view.entries[0].size
    lines = [
        f"norm scale at dims {', '.join(map(str, view.dims))} ({dims_source}); "
        f"value (rank by |value|, 0 = smallest of {size})",
        f"{'layer':>5} {'norm':<28}" + "".join(f" {'d' + str(d):>18}" for d in view.dims),
    ]
    rows: dict[tuple[int, str], list] = {}
    for e in view.entries:
        rows.setdefault((e.layer, e.norm), []).append(e)
    for (layer, norm), entries in rows.items():
        cells = "".join(f" {e.value:>11.4g} (#{e.rank_abs:>3})" for e in entries)
        lines.append(f"{layer:>5} {norm:<28}{cells}")
    return lines


def lod_table(lod) -> list[str]:
    lines = [f"OWL layerwise outlier ratio: share of |W_ij|·||X_j|| above {lod.m:g}x the layer mean", f"{'layer':>5} {'ratio %':>8}"]
    return lines + [f"{r.layer:>5} {100 * r.ratio:>8.3f}" for r in lod.layers]


def massive_dims(model) -> list[int]:
    """Dims of the massive activations on the built-in sentence (paper rule), largest first."""
    from outlier_core.observe.capture import scan
    from outlier_core.observe.detect import PAPER_RULE

    log.info("scanning a short sentence for massive dims")
    found = scan(model, SCAN_TEXT, prepend_bos=True, rule=PAPER_RULE).massive
    return list(dict.fromkeys(m.dim for m in sorted(found, key=lambda m: -abs(m.value))))


def run(args: argparse.Namespace) -> None:
    from app.cli.common import load_model_for
    from outlier_core.contract import to_json
    from outlier_core.observe.owl import layer_outlier_ratios
    from outlier_core.observe.tensor_stats import DEFAULT_K, WeightRule
    from outlier_core.observe.weights import model_weight_stats, norm_at_dims

    rule = WeightRule(args.rule, DEFAULT_K[args.rule] if args.k is None else args.k)
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    layers = None if args.layer is None else (args.layer,)
    model = load_model_for(args)
    dims, dims_source = (args.dims, "given") if args.dims else (massive_dims(model), "massive on the quick scan")
    view = norm_at_dims(model, dims, layers) if dims else None
    log.info("computing weight statistics (%s)", ", ".join(kinds))
    result = model_weight_stats(model, rule, kinds=kinds, layers=layers)
    lod = layer_outlier_ratios(model, SCAN_TEXT) if args.lod else None
    if args.json:
        emit_json({
            "weights": to_json(result),
            "dims_source": dims_source,
            "scan_text": None if args.dims else SCAN_TEXT,
            "norm_at_dims": to_json(view) if view else None,
            "lod": to_json(lod) if lod else None,
        })
        return
    lines = stats_table(result) + [""]
    if view:
        lines += norm_table(view, dims_source)
    else:
        lines.append("no massive activations on the quick scan (paper rule); pass --dims to choose dims")
    if lod:
        lines += [""] + lod_table(lod)
    emit_lines(lines)
