"""`outlier-lab intervene`: zero, mean-replace, scale or set activations or weights; baseline vs intervened vs control."""

from __future__ import annotations

import argparse

from app.cli.common import (
    CliError,
    add_model_arguments,
    add_text_arguments,
    emit_json,
    emit_lines,
)

# Core errors name the entry and its field (`interventions[0].position`); on the command line
# the coordinates come from --at or --weight, every other field from its own option.
FLAG_OF_FIELD = {"layer": "--at", "position": "--at", "dim": "--at", "parameter": "--weight", "index": "--weight"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_text_arguments(parser)
    parser.add_argument("--at", action="append", default=[], metavar="LAYER:POS:DIM",
                        help="activation coordinate; POS and DIM may be 3, 3,5,8 or all (repeatable: applied together)")
    parser.add_argument("--weight", action="append", default=[], metavar="PARAM:I[,J]",
                        help="weight entry by Hugging Face name, e.g. model.layers.11.mlp.down_proj.weight:507,1487; "
                             "'all' for a whole row or column; a 1-D norm weight takes one index (repeatable)")
    parser.add_argument("--site", default="resid_post", help="hook site of every --at (default: %(default)s)")
    parser.add_argument("--mode", required=True, help="zero, mean (reference-corpus mean; activations only), scale or set")
    parser.add_argument("--value", type=float, default=None, help="the factor for scale, the new value for set")
    parser.add_argument("--eval-file", default=None, help="score perplexity on this UTF-8 text file instead of the prompt")
    parser.add_argument("--top-k", type=int, default=5, help="next-token predictions to list (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="picks the control coordinates (default: %(default)s)")


def _selector(part: str) -> int | list[int] | str:
    if part == "all":
        return "all"
    items = [int(p) for p in part.split(",")]
    return items[0] if len(items) == 1 else items


def parse_at(value: str) -> tuple[int, int | list[int] | str, int | list[int] | str]:
    """`LAYER:POS:DIM` -> (layer, position, dim); POS and DIM may be comma lists or `all`."""
    parts = value.split(":")
    try:
        if len(parts) != 3:
            raise ValueError
        return int(parts[0]), _selector(parts[1]), _selector(parts[2])
    except ValueError:
        raise CliError(f"--at: expected LAYER:POS:DIM (POS and DIM an int, a comma list or 'all'), got {value!r}") from None


def parse_weight(value: str) -> tuple[str, tuple[int | str, ...]]:
    """`PARAM:I[,J]` -> (parameter name, index); `all` selects a whole axis."""
    name, _, index = value.rpartition(":")
    try:
        if not name or not index:
            raise ValueError
        return name, tuple("all" if i == "all" else int(i) for i in index.split(","))
    except ValueError:
        raise CliError(f"--weight: expected PARAM:I[,J] with integer indices or 'all', got {value!r}") from None


def _fmt_selector(s) -> str:
    return s if s == "all" else ",".join(str(i) for i in s)


def _loss_row(name: str, loss, baseline) -> str:
    ratio = loss.perplexity / baseline.perplexity
    return f"{name:<11} {loss.loss:>8.4f} {loss.perplexity:>14.4g} {ratio:>11.4g}"


def report(result, model_name: str) -> list[str]:
    source = "the prompt" if result.eval_source == "prompt" else result.eval_source
    bos = "BOS prepended" if result.prepend_bos else "no BOS"
    lines = [f"{model_name}: {len(result.tokens)}-token prompt ({bos}); perplexity over {result.baseline.n_tokens} predictions on {source}"]
    for label, ivs in (("intervened:", result.interventions), ("control:", result.control_interventions)):
        for iv in ivs:
            value = "" if iv.value is None else f" {iv.value:g}"
            lines.append(f"  {label:<12} {iv.mode}{value} layer {iv.layer} {iv.site} pos {_fmt_selector(iv.position)} dim {_fmt_selector(iv.dim)}")
    for label, edits in (("weights:", result.weight_edits), ("control:", result.control_weight_edits)):
        for e in edits:
            value = "" if e.value is None else f" {e.value:g}"
            lines.append(f"  {label:<12} {e.mode}{value} {e.parameter}[{', '.join(str(i) for i in e.index)}]")
    lines += ["", f"{'':<11} {'loss':>8} {'perplexity':>14} {'x baseline':>11}"]
    lines += [_loss_row("baseline", result.baseline, result.baseline),
              _loss_row("intervened", result.intervened, result.baseline),
              _loss_row("control", result.control, result.baseline), ""]
    for label, top in (("next token before", result.top_k.before), ("next token after ", result.top_k.after)):
        lines.append(f"{label}: " + "  ".join(f"{p.token!r} {p.prob:.3f}" for p in top))
    lines += ["", f"{'layer':>5} {'max|x| before':>14} {'after':>12} {'sink@0 before':>14} {'after':>7}"]
    lines += [f"{e.layer:>5} {e.max_abs_before:>14.1f} {e.max_abs_after:>12.1f} {e.sink_share_before:>14.3f} {e.sink_share_after:>7.3f}"
              for e in result.layers]
    return lines


def run(args: argparse.Namespace) -> None:
    from app.cli.common import load_model_for
    from outlier_core.contract import to_json
    from outlier_core.errors import InputError
    from outlier_core.intervene.corpus import from_file
    from outlier_core.intervene.evaluate import evaluate
    from outlier_core.intervene.interventions import Intervention
    from outlier_core.intervene.weight_edits import WeightEdit

    if not args.at and not args.weight:
        raise CliError("--at or --weight: give at least one coordinate to intervene on")
    coordinates = [parse_at(a) for a in args.at]
    weights = [parse_weight(w) for w in args.weight]
    try:
        interventions = [Intervention(layer, pos, dim, args.mode, args.value, args.site) for layer, pos, dim in coordinates]
        edits = [WeightEdit(name, index, args.mode, args.value) for name, index in weights]
        eval_text = from_file(args.eval_file) if args.eval_file else None
        model = load_model_for(args)
        result = evaluate(model, args.text, interventions, edits, prepend_bos=args.prepend_bos,
                          eval_text=eval_text, top_k=args.top_k, seed=args.seed)
    except InputError as err:
        field = err.field.rpartition(".")[2]
        if field not in FLAG_OF_FIELD:
            raise InputError(field, err.reason) from err
        raise CliError(f"{FLAG_OF_FIELD[field]} ({field}): {err.reason}") from err
    emit_json(to_json(result)) if args.json else emit_lines(report(result, args.model))
