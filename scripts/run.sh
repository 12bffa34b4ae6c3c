#!/usr/bin/env bash
# Runs the OCS in a project virtualenv (for now: the Diameter server on 127.0.0.1:3868).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
exec .venv/bin/ocs "${@:-serve}"
