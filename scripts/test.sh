#!/usr/bin/env bash
# The whole test suite: lint, format and type checks, then unit tests and end-to-end tests on a real
# sandbox fleet (needs root), 3 pytest workers sharing one fleet. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check sgpfab tests benchmarks tasks.py fabfile.py
.venv/bin/ruff format --check sgpfab tests benchmarks tasks.py fabfile.py
.venv/bin/mypy
exec .venv/bin/python -m pytest -n 3 "$@"
