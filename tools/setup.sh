#!/usr/bin/env bash
# Set up GliomaSuite in ./.venv on a fresh machine (idempotent: a second run only checks).
# PyTorch's CPU wheel is installed first, so the package's `torch>=2.2` requirement is already met
# and pip does not pull a multi-GB CUDA build; users with a GPU install their CUDA build of torch
# instead before running this.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install -q "torch==2.13.0"
fi
.venv/bin/pip install -q -e ".[test]"
