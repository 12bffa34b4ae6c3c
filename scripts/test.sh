#!/usr/bin/env bash
# Runs the whole test suite (pytest, which also runs ruff and mypy) in a project virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
exec .venv/bin/python -m pytest "$@"
