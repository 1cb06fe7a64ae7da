#!/usr/bin/env bash
# The test suite: set up (once), lint, then pytest. Triton kernels run through the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest -n 2 -q "$@"
