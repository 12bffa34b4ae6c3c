#!/usr/bin/env bash
# Runs the whole test suite (pytest, which also runs ruff and mypy) in a project virtualenv, with
# the development tools at the versions in constraints-dev.txt (pyproject.toml has lower bounds).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c constraints-dev.txt -e '.[dev]'
exec .venv/bin/python -m pytest "$@"
