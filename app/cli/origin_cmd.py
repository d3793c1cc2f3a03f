"""`outlier-lab origin`: which part of a block, and which MLP neurons, wrote an activation."""

from __future__ import annotations

import argparse

from app.cli.common import (
    add_model_arguments,
    add_text_arguments,
    emit_json,
    emit_lines,
    parse_coordinate,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_text_arguments(parser)
    parser.add_argument("--at", required=True, type=parse_coordinate, metavar="LAYER:POS:DIM", help="residual coordinate after block LAYER, e.g. 11:0:507")
    parser.add_argument("--top-k", type=int, default=10, help="neurons to list (default: %(default)s)")


def report(origin) -> list[str]:
    lines = [
        f"layer {origin.layer}, position {origin.position} ({origin.token!r}), dim {origin.dim}: resid_post = {origin.resid_post:.2f}",
        *(f"  {part:<10} {value:>12.2f}" for part, value in origin.parts.items()),
        "",
        f"top MLP neurons by contribution to dim {origin.dim} ({origin.down_proj}[{origin.dim}, neuron]):",
        f"  {'neuron':>7} {'activation':>12} {'weight':>9} {'contribution':>13}",
    ]
    lines += [f"  {n.neuron:>7} {n.activation:>12.2f} {n.weight:>9.3f} {n.contribution:>13.2f}" for n in origin.neurons]
    return lines


def run(args: argparse.Namespace) -> None:
    from app.cli.common import CliError, load_model_for
    from outlier_core.contract import to_json
    from outlier_core.errors import InputError
    from outlier_core.observe.origin import trace_origin

    layer, position, dim = args.at
    model = load_model_for(args)
    try:
        result = trace_origin(model, args.text, layer, position, dim, prepend_bos=args.prepend_bos, top_k=args.top_k)
    except InputError as err:
        if err.field not in ("layer", "position", "dim"):
            raise
        raise CliError(f"--at: {err.field} {err.reason}") from err
    emit_json(to_json(result)) if args.json else emit_lines(report(result))
