"""`outlier-lab prepare`: convert registry models' GGUF files into the safetensors cache now."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="*", default=["smollm2-135m"], help="registry names (default: smollm2-135m)")


def run(args: argparse.Namespace) -> None:
    import logging

    import torch

    from app.cli.common import CliError
    from outlier_core.load.models import ModelNotAvailable, resolve_spec

    for name in args.models:
        try:
            resolve_spec(name).load_hf(torch.float32)
        except ModelNotAvailable as err:
            raise CliError(f"models: {err}") from err
        logging.getLogger(__name__).info("%s is ready", name)
