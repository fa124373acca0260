#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh) and runs the whole test suite, the end-to-end tests included:
# they start the real vLLM teacher on Ray Serve (a few minutes), a local Ray and an S3 server.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m unit` for the seconds-long tier (the tiers
# unit, ray, slow, e2e: README, "Tests").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
