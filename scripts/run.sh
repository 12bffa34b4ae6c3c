#!/usr/bin/env bash
# Runs the demo in a project virtualenv: embedded Redis + the OCS + the network simulator on the
# smoke scenario (about 30 s), then the report and the audit verdict. Arguments replace 'demo',
# e.g. 'bash scripts/run.sh serve' runs the server alone.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
exec .venv/bin/ocs "${@:-demo}"
