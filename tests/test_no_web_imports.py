"""`outlier_core` is a library for notebooks and the CLI: it must not pull in a web stack."""

from __future__ import annotations

import subprocess
import sys

WEB = ("fastapi", "starlette", "dash", "flask", "uvicorn", "httpx", "werkzeug")

PROBE = f"""
import importlib, pkgutil, sys
import outlier_core
for info in pkgutil.walk_packages(outlier_core.__path__, "outlier_core."):
    importlib.import_module(info.name)
print(",".join(sorted(m for m in {WEB!r} if m in sys.modules)))
"""


def test_outlier_core_imports_no_web_framework() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
