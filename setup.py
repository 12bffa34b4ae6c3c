"""Build hook for the compiled Diameter codec; pyproject.toml holds the project's configuration.

Theory of operation: a plain install (``pip install -e '.[dev]'``, what scripts/test.sh and CI
run) compiles the modules on the codec's hot path to C extensions with mypyc (shipped inside the
``mypy`` package): about a fifth fewer instructions per CCR for the whole server
(bench/server_cost.py). It needs a C compiler and the Python headers. mypy is asked for as a build
requirement through ``setup_requires``, which setuptools' PEP 517 backend reports to pip, so pip
fetches it into the isolated build environment; a build without isolation
(``--no-build-isolation``) uses the mypy already installed. ``OCS_MYPYC=0`` in the environment
builds nothing and stays pure Python (a machine without a compiler). The compiled modules behave
like the Python ones, and the Python sources stay next to them; ``OCS_PURE_PYTHON=1`` at run time
imports the sources instead (protocol/build.py): see protocol/README.md, "Compiled build".
"""

from __future__ import annotations

import os

from setuptools import setup

# The codec's hot path: decode/encode, the dictionary tables it reads, the AVP types and the
# message classes it builds, and the grammar check that runs on every request (protocol/build.py);
# then the CCR's path through the application: read the CCR, rate it, the credit-control handler
# around the engine call, lay out the CCA, the driver that runs each answer without a task; the
# charge's side of the balance store, its argument checks and reply parsing, the caller over the
# pipelined Redis client, and that client with its RESP packing (ocs/build.py).
COMPILED_MODULES = [
    "protocol/constants.py",
    "protocol/avp_types.py",
    "protocol/dictionary/__init__.py",
    "protocol/message.py",
    "protocol/codec.py",
    "protocol/encoded.py",
    "protocol/grammar.py",
    "protocol/pending.py",
    "protocol/duplicates.py",
    "protocol/watchdog.py",
    "protocol/peer.py",
    "protocol/aio/transport.py",
    "protocol/aio/tls.py",
    "protocol/aio/server.py",
    "ocs/charging/ccr.py",
    "ocs/charging/cca.py",
    "ocs/charging/answer_template.py",
    "ocs/rating/rate.py",
    "ocs/charging/credit_control.py",
    "ocs/in_flight.py",
    "balance/resp.py",
    "balance/pipeline.py",
    "balance/callers.py",
    "balance/script_io.py",
    "balance/validation.py",
    "balance/store.py",
]
# pip builds in an isolated environment that has mypy but not the project's dependencies
# (structlog, redis, prometheus-client, ...): their types are unknown there, which is no error for
# the build (the test suite's mypy run checks them); only the compiled modules' own errors count.
BUILD_TYPE_CHECK_OPTIONS = ["--ignore-missing-imports", "--follow-imports=silent", "--no-warn-unused-ignores"]
MYPY_REQUIREMENT = "mypy>=1.10"  # the dev extra's floor; mypyc comes inside the mypy package


def _compiled_build() -> None:
    try:
        from mypyc.build import mypycify
    except ImportError:
        # Under pip's isolated build this makes setuptools report mypy as a build requirement;
        # pip installs it and runs this file again, when the import succeeds.
        setup(setup_requires=[MYPY_REQUIREMENT])
        raise SystemExit(f"the compiled build needs {MYPY_REQUIREMENT}: pip install mypy (or OCS_MYPYC=0)") from None
    setup(ext_modules=mypycify([*BUILD_TYPE_CHECK_OPTIONS, *COMPILED_MODULES], opt_level="3"))


if os.environ.get("OCS_MYPYC", "1") == "0":
    setup()
else:
    _compiled_build()
