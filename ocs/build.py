"""The application's modules that setup.py compiles with mypyc besides the codec's
(protocol/build.py, protocol/README.md "Compiled build").

Theory of operation: the CCR's path through the application (reading the CCR, rating, the
credit-control handler around the engine call, laying out the CCA, ``ocs.in_flight``'s driver of
each answer) and the charge's side of the balance store (``BalanceStore.charge``, its argument
checks and reply words, the caller and the pipelined Redis client under it, and its RESP packing)
run for every request, and compiled they cost a fraction of their interpreted instructions (bench/server_cost.py, and
bench/README.md for the figures). setup.py compiles the modules named here; a test holds the two
lists together. With ``OCS_PURE_PYTHON=1`` ``ocs/__init__.py`` has them imported from their sources,
like the codec's, so the pure-Python fallback is the whole path. The balance modules are named here,
not in a ``balance`` list of their own, because balance imports neither ocs nor protocol
(DESIGN.md's layers): the choice is made when ``ocs`` is imported, which the server and the tests of
the charging path do first.
"""

from __future__ import annotations

import importlib
from types import ModuleType

COMPILED_MODULES = (
    "ocs.charging.ccr",
    "ocs.charging.cca",
    "ocs.charging.answer_template",
    "ocs.rating.rate",
    "ocs.charging.credit_control",
    "ocs.in_flight",
    "balance.resp",
    "balance.pipeline",
    "balance.callers",
    "balance.script_io",
    "balance.validation",
    "balance.store",
)


def compiled_modules() -> tuple[ModuleType, ...]:
    return tuple(importlib.import_module(name) for name in COMPILED_MODULES)
