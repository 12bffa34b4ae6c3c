#!/usr/bin/env bash
# Runs the whole test suite (pytest, which also runs ruff and mypy) in a project virtualenv, with
# the development tools at the versions in constraints-dev.txt (pyproject.toml has lower bounds).
# The install compiles the codec with mypyc (setup.py; OCS_MYPYC=0 for pure Python), so the suite
# runs on the compiled build; then the codec's and the charging path's tests run again on the
# pure-Python fallback (OCS_PURE_PYTHON=1, protocol/build.py), which must pass them too.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# PIP_CONSTRAINT, not -c: pip applies it to the isolated build environment too (mypy, for mypyc).
PIP_CONSTRAINT="$PWD/constraints-dev.txt" .venv/bin/python -m pip install --quiet -e '.[dev]'
.venv/bin/python -m pytest "$@"
if [ "$#" -eq 0 ]; then
  OCS_PURE_PYTHON=1 .venv/bin/python -m pytest tests/protocol tests/ocs/test_ccr_cca.py \
    tests/ocs/test_credit_control.py tests/ocs/test_final_unit.py tests/ocs/test_python_diameter_client.py \
    tests/ocs/test_sessions.py tests/ocs/test_refunds.py tests/ocs/test_rating.py tests/ocs/test_build.py \
    tests/balance/test_resp.py tests/balance/test_pipeline.py tests/balance/test_deadlines.py
fi
