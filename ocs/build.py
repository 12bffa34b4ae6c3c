"""The application's modules that setup.py compiles with mypyc besides the codec's
(protocol/build.py, protocol/README.md "Compiled build").

Theory of operation: the CCR's path through the application (reading the CCR, rating, the
credit-control handler around the engine call, laying out the CCA) runs for every request, and
compiled it costs a fraction of its interpreted instructions (bench/server_cost.py, and
bench/README.md for the figures). setup.py compiles the modules named here; a test holds the
two lists together. With ``OCS_PURE_PYTHON=1`` ``ocs/__init__.py`` has them imported from their
sources, like the codec's, so the pure-Python fallback is the whole path.
"""

from __future__ import annotations

import importlib
from types import ModuleType

COMPILED_MODULES = (
    "ocs.charging.ccr",
    "ocs.charging.cca",
    "ocs.rating.rate",
    "ocs.charging.credit_control",
)


def compiled_modules() -> tuple[ModuleType, ...]:
    return tuple(importlib.import_module(name) for name in COMPILED_MODULES)
