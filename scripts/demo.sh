#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh) and runs the main job: the embedded teacher on Ray Serve,
# banking77 rollouts through Ray Data, Parquet in rollouts/banking77, and the run's summary.
# Extra arguments go to `raydspy demo` (see `.venv/bin/raydspy demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/raydspy demo "$@"
