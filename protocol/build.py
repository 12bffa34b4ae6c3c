"""Which build of the codec is running: pure Python, or compiled with mypyc (the opt-in build of
setup.py, protocol/README.md "Compiled build").

Theory of operation: ``COMPILED_MODULES`` names the hot-path modules setup.py compiles when
``OCS_MYPYC=1`` (a test holds the two lists together). A compiled module is loaded from an
extension file instead of its ``.py``; ``codec_build`` looks at where each was loaded from and says
"compiled" (all), "pure" (none) or "mixed" (some: stale ``.so`` files, which Python prefers to the
sources next to them).
"""

from __future__ import annotations

import importlib
from types import ModuleType

COMPILED_MODULES = (
    "protocol.constants",
    "protocol.avp_types",
    "protocol.dictionary",
    "protocol.message",
    "protocol.codec",
    "protocol.grammar",
)


def compiled_modules() -> tuple[ModuleType, ...]:
    return tuple(importlib.import_module(name) for name in COMPILED_MODULES)


def is_compiled(module: ModuleType) -> bool:
    return not str(module.__file__).endswith(".py")


def codec_build() -> str:
    compiled = [is_compiled(module) for module in compiled_modules()]
    return "compiled" if all(compiled) else "mixed" if any(compiled) else "pure"
