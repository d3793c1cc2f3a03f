"""`outlier-lab api`: serve the FastAPI backend with uvicorn (the model loads after startup).

Flags override the `OUTLIER_LAB_*` environment variables, which override the defaults.
"""

from __future__ import annotations

import argparse
import logging

from app.cli.common import CliError

log = logging.getLogger(__name__)

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="bind address (default: $OUTLIER_LAB_HOST or 127.0.0.1; set an API key before exposing it)")
    parser.add_argument("--port", type=int, default=None, help="port (default: $OUTLIER_LAB_PORT or 8000)")
    parser.add_argument("--model", default=None, help="registry name, Hugging Face id or local directory (default: $OUTLIER_LAB_MODEL or smollm2-135m)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: $OUTLIER_LAB_DEVICE, else cuda when present)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: $OUTLIER_LAB_DTYPE, else bf16 on CUDA, fp32 on CPU)")


def run(args: argparse.Namespace) -> None:
    import uvicorn
    from pydantic import ValidationError

    from app.api.main import create_app
    from app.api.settings import Settings

    overrides = {name: getattr(args, name) for name in ("host", "port", "model", "device", "dtype") if getattr(args, name) is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as err:
        first = err.errors()[0]
        raise CliError(f"--{'-'.join(str(p) for p in first['loc'])}: {first['msg']}") from err
    if settings.host not in _LOOPBACK and settings.api_key is None:
        log.warning("serving on %s without an API key: anyone who can reach it can use the model (set OUTLIER_LAB_API_KEY)", settings.host)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
