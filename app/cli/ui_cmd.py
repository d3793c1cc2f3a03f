"""`outlier-lab ui`: serve the Dash workbench; it talks to an API started separately.

Only Dash, Plotly and httpx are imported here: the UI image carries no torch.
"""

from __future__ import annotations

import argparse
import logging
import os

from app.cli.common import CliError

log = logging.getLogger(__name__)

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8050, help="port (default: %(default)s)")
    parser.add_argument("--api-url", default="http://127.0.0.1:8000", help="where the API answers (default: %(default)s)")


def quiet_servers() -> None:
    """One log line per request (a health poll every 2 s) would bury everything else."""
    for name in ("werkzeug", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run(args: argparse.Namespace) -> None:
    from app.ui.app import create_app
    from app.ui.client import API_KEY_ENV

    if not 1 <= args.port <= 65535:
        raise CliError(f"--port: must be in 1..65535, got {args.port}")
    if not args.api_url.startswith(("http://", "https://")):
        raise CliError(f"--api-url: must start with http:// or https://, got {args.api_url!r}")
    ask_for_key = args.host not in LOOPBACK and bool(os.environ.get(API_KEY_ENV))  # never the server's key for whoever reaches it
    if args.host not in LOOPBACK and not ask_for_key:
        log.warning("serving the UI on %s: anyone who can reach it can drive the model through it", args.host)
    quiet_servers()
    log.info("Outlier Lab UI on http://%s:%d (API: %s)%s", args.host, args.port, args.api_url, "; users sign in with the API's key" if ask_for_key else "")
    create_app(args.api_url, ask_for_key=ask_for_key).run(host=args.host, port=args.port, debug=False)
