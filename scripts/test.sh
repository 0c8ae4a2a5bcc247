#!/usr/bin/env bash
# The whole test suite: unit tests and end-to-end tests on a real sandbox fleet (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest "$@"
