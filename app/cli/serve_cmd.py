"""`outlier-lab serve`: the API (a child process) and the UI (this process) together, on loopback.

Ctrl-C (or SIGTERM) stops both: the UI returns, and the API child is terminated and
waited for, so no server outlives the command.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import subprocess
import sys

from app.cli.common import CliError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
STOP_GRACE_S = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8050, help="UI port (default: %(default)s)")
    parser.add_argument("--api-port", type=int, default=8000, help="API port (default: %(default)s)")
    parser.add_argument("--model", default="smollm2-135m", help="registry name, Hugging Face id or local directory (default: %(default)s)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: bf16 on CUDA, fp32 on CPU)")


def _check_free(port: int, option: str) -> None:
    if not 1 <= port <= 65535:
        raise CliError(f"{option}: must be in 1..65535, got {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError as err:
            raise CliError(f"{option}: {HOST}:{port} is already in use ({err.strerror}); pick another port") from err


def api_command(args: argparse.Namespace) -> list[str]:
    command = [sys.executable, "-m", "app.cli.main", "api", "--host", HOST, "--port", str(args.api_port), "--model", args.model]
    for option in ("device", "dtype"):
        if getattr(args, option):
            command += [f"--{option}", getattr(args, option)]
    return command


def _stop(child: subprocess.Popen) -> None:
    if child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        log.warning("the API did not stop within %.0f s; killing it", STOP_GRACE_S)
        child.kill()
        child.wait()


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> None:
    from app.cli.ui_cmd import quiet_servers
    from app.ui.app import create_app

    _check_free(args.port, "--port")
    _check_free(args.api_port, "--api-port")
    api_url = f"http://{HOST}:{args.api_port}"
    quiet_servers()
    child = subprocess.Popen(api_command(args))
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # so `finally` stops the API on SIGTERM too
    try:
        log.info("API starting on %s (model %s); the UI shows its loading state", api_url, args.model)
        log.info("Outlier Lab: open http://%s:%d", HOST, args.port)
        create_app(api_url).run(host=HOST, port=args.port, debug=False)
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop(child)
