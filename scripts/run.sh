#!/usr/bin/env bash
# The main job: set up (once), then generate with the embedded default model (random weights).
# Extra arguments go to `nemo-ref generate`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "$#" -eq 0 ]; then set -- "Write a haiku about the sea." --max-tokens 24 --seed 0; fi
exec .venv/bin/nemo-ref generate "$@"
