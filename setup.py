"""Build hook for the opt-in compiled Diameter codec; pyproject.toml holds the project's configuration.

Theory of operation: a plain install (``pip install -e '.[dev]'``, what CI runs) builds nothing
here and stays pure Python. With ``OCS_MYPYC=1`` in the environment, the modules on the codec's
hot path are compiled to C extensions with mypyc (shipped inside the ``mypy`` package). mypy is
then asked for as a build requirement through ``setup_requires``, which setuptools' PEP 517
backend reports to pip, so only the compiled build downloads it; a build without isolation
(``--no-build-isolation``) uses the mypy already installed. The compiled modules behave like the
Python ones, and the Python sources stay next to them: see protocol/README.md, "Compiled build",
for how to build, check and remove them.
"""

from __future__ import annotations

import os

from setuptools import setup

# The codec's hot path: decode/encode, the dictionary tables it reads, the AVP types and the
# message classes it builds, and the grammar check that runs on every request.
COMPILED_MODULES = [
    "protocol/constants.py",
    "protocol/avp_types.py",
    "protocol/dictionary/__init__.py",
    "protocol/message.py",
    "protocol/codec.py",
    "protocol/grammar.py",
]
MYPY_REQUIREMENT = "mypy>=1.10"  # the dev extra's floor; mypyc comes inside the mypy package


def _compiled_build() -> None:
    try:
        from mypyc.build import mypycify
    except ImportError:
        # Under pip's isolated build this makes setuptools report mypy as a build requirement;
        # pip installs it and runs this file again, when the import succeeds.
        setup(setup_requires=[MYPY_REQUIREMENT])
        raise SystemExit(f"OCS_MYPYC=1 needs {MYPY_REQUIREMENT} to build: pip install mypy") from None
    setup(ext_modules=mypycify(COMPILED_MODULES, opt_level="3"))


if os.environ.get("OCS_MYPYC") == "1":
    _compiled_build()
else:
    setup()
