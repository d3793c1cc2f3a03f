"""What every command shares: model options, loading, argument parsing, output."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any


class CliError(Exception):
    """A user-facing error: printed as one line naming the bad option, exit status 2."""


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m", help="registry name, Hugging Face id or local directory (default: %(default)s)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--device-map", default=None, help="spread the model over devices instead: auto, balanced, sequential or a JSON map")


def add_text_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text", required=True, help="the prompt to run")
    parser.add_argument("--no-bos", dest="prepend_bos", action="store_false", help="do not prepend the BOS token")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def load_model_for(args: argparse.Namespace) -> Any:
    from outlier_core.errors import InputError
    from outlier_core.load.models import ModelNotAvailable, load_model
    from outlier_core.load.placement import parse_device_map

    try:
        placement = parse_device_map(getattr(args, "device_map", None))
    except InputError as err:
        raise CliError(f"--device-map: {err.reason}") from err
    if placement is not None and args.device is not None:
        raise CliError("--device-map: give --device or --device-map, not both")
    try:
        return load_model(args.model, device=args.device, dtype=args.dtype, placement=placement)
    except ModelNotAvailable as err:
        raise CliError(f"--model: {err}") from err
    except ValueError as err:
        raise CliError(f"--dtype: {err}") from err


def parse_coordinate(value: str) -> tuple[int, int, int]:
    """`LAYER:POS:DIM` -> (layer, position, dim), for argparse `type=`."""
    parts = value.split(":")
    if len(parts) != 3 or not all(p.strip().lstrip("-").isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected LAYER:POS:DIM with integers, got {value!r}")
    layer, position, dim = (int(p) for p in parts)
    return layer, position, dim


def finite_float(value: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {value!r}")
    return number


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def emit_json(payload: Any) -> None:
    """JSON values (`outlier_core.contract.to_json` of a result) as one line; NaN and inf print as null, as the API sends them."""
    sys.stdout.write(json.dumps(_finite(payload), allow_nan=False) + "\n")


def emit_lines(lines: list[str]) -> None:
    sys.stdout.write("\n".join(lines) + "\n")
