"""`outlier-lab`: one subcommand per module, imported only when it runs.

Each command module defines `add_arguments(parser)` and `run(args)`. Heavy imports
(torch, TransformerLens) happen inside `run`, so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from app.cli.common import CliError
from outlier_core.errors import InputError

COMMANDS: dict[str, tuple[str, str]] = {
    "scan": ("app.cli.scan_cmd", "per-layer activation outliers of one prompt"),
    "origin": ("app.cli.origin_cmd", "which block and which MLP neurons wrote a massive activation"),
    "intervene": ("app.cli.intervene_cmd", "zero, mean-replace, scale or set activations or weights: baseline vs intervened vs control"),
    "weights": ("app.cli.weights_cmd", "statistics and outliers of every norm weight and projection matrix"),
    "prepare": ("app.cli.prepare_cmd", "convert the embedded models to the fast-loading cache once"),
    "mask": ("app.cli.mask_cmd", "build a selection mask by the outlier rules (suggest), or show one"),
    "finetune": ("app.cli.finetune_cmd", "fine-tune only a mask's coordinates and compare with baselines"),
    "sweep": ("app.cli.sweep_cmd", "a grid of budgets × methods × seeds, each trial a run process; resumable, summarised with 95% intervals"),
    "export-peft": ("app.cli.export_peft_cmd", "write a fine-tune run's sparse deltas as a peft adapter folder (the outlier_mask method)"),
    "api": ("app.cli.api_cmd", "serve the HTTP API (FastAPI) on 127.0.0.1:8000"),
    "ui": ("app.cli.ui_cmd", "serve the browser workbench (Dash) on 127.0.0.1:8050 against a running API"),
    "serve": ("app.cli.serve_cmd", "start the API and the browser workbench together; open http://127.0.0.1:8050"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="outlier-lab", description="Find, poke and fine-tune the outliers of a transformer.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, summary) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=summary, description=summary)
        importlib.import_module(module_name).add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        module.run(args)
    except InputError as err:
        message = f"--{err.field.replace('_', '-')}: {err.reason}"
    except CliError as err:
        message = str(err)
    else:
        return 0
    sys.stderr.write(f"outlier-lab {args.command}: error: {message}\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
